from __future__ import annotations

from pxproxy.integrations.ansible import ansible_host, ansible_inventory, group_name, host_names

from ..builders import make_guest
from .support import snapshot

WIKI = make_guest(101, "wiki", ips=("fd00::5", "10.0.0.5"), tags=("web", "my-tag"), node="pve1")
DB = make_guest(102, "db", kind="qemu", status="stopped", node="pve2")._replace(pool="prod.db")
V6 = make_guest(103, "v6only", ips=("fd00::7",), node="pve1")
TEMPLATE = make_guest(105, "tmpl", ips=("10.0.0.9",), template=True)
# "web" three times: twice in home (so home-web repeats too), once in lab.
WEB_A = make_guest(110, "web", node="pve1", ips=("10.0.0.10",))
WEB_B = make_guest(111, "web", node="pve2", ips=("10.0.0.11",))
WEB_LAB = make_guest(110, "web", cluster="lab", node="lab1", ips=("10.1.0.10",))
NAMELESS = make_guest(120, "", cluster="lab", node="lab1")
SNAP = snapshot(WIKI, DB, V6, TEMPLATE, WEB_A, WEB_B, WEB_LAB, NAMELESS)


def test_group_names_are_letters_digits_and_underscores() -> None:
    assert group_name("tag", "my-tag") == "tag_my_tag"
    assert group_name("pool", "prod.db") == "pool_prod_db"
    assert group_name("node", "pve1") == "node_pve1"


def test_host_names_are_guest_names_unless_shared() -> None:
    names = {name: g.ref for name, g in host_names(SNAP.guests).items()}
    assert names == {
        "wiki": "home:101",
        "db": "home:102",
        "v6only": "home:103",
        "tmpl": "home:105",
        "home-web-110": "home:110",
        "home-web-111": "home:111",
        "lab-web": "lab:110",
        "lab-120": "lab:120",
    }


def test_a_derived_name_never_takes_another_guests_own_name() -> None:
    taken = make_guest(130, "lab-web", cluster="home", ips=("10.0.0.30",))
    names = host_names((*SNAP.guests, taken))
    assert names["lab-web"] is taken
    assert names["lab-web-110"].ref == "lab:110"
    assert len(names) == len(SNAP.guests) + 1


def test_list_has_groups_by_cluster_node_type_status_tag_and_pool() -> None:
    inventory = ansible_inventory(SNAP)
    hostvars = inventory.pop("_meta")["hostvars"]
    assert "tmpl" not in hostvars  # templates are not hosts
    children = inventory.pop("all")["children"]
    assert children == [*sorted(inventory), "ungrouped"]
    assert inventory["node_pve1"] == {"hosts": ["home-web-110", "v6only", "wiki"]}
    assert inventory["node_lab1"] == {"hosts": ["lab-120", "lab-web"]}
    assert inventory["type_qemu"] == {"hosts": ["db"]}
    assert inventory["status_stopped"] == {"hosts": ["db"]}
    assert inventory["tag_my_tag"] == {"hosts": ["wiki"]}
    assert inventory["tag_web"] == {"hosts": ["wiki"]}
    assert inventory["pool_prod_db"] == {"hosts": ["db"]}
    assert inventory["cluster_lab"] == {"hosts": ["lab-120", "lab-web"]}
    assert set(inventory["status_running"]["hosts"]) == set(hostvars) - {"db"}


def test_hostvars_carry_ansible_host_vmid_node_cluster_and_tags() -> None:
    hostvars = ansible_inventory(SNAP)["_meta"]["hostvars"]
    assert hostvars["wiki"] == {
        "ansible_host": "10.0.0.5",  # the first IPv4, though an IPv6 one comes first
        "vmid": 101,
        "node": "pve1",
        "cluster": "home",
        "tags": ["web", "my-tag"],
        "type": "lxc",
        "status": "running",
    }
    assert hostvars["v6only"]["ansible_host"] == "fd00::7"
    assert "ansible_host" not in hostvars["db"]
    assert hostvars["db"]["pool"] == "prod.db"
    assert "pool" not in hostvars["wiki"]


def test_host_answers_that_hosts_vars_or_nothing() -> None:
    assert ansible_host(SNAP, "lab-web") == ansible_inventory(SNAP)["_meta"]["hostvars"]["lab-web"]
    assert ansible_host(SNAP, "lab-web")["vmid"] == 110
    assert ansible_host(SNAP, "nobody") == {}
    assert ansible_host(SNAP, "tmpl") == {}
