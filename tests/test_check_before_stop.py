"""`pxproxy check` on `idle.before_stop`: a container's command runs in a node shell, which
needs a root@pam password ticket; a cluster without one gets a warning naming the route."""

from __future__ import annotations

from pxproxy.check import before_stop_warnings
from pxproxy.config.models import Config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory

from .builders import make_guest

TOKEN = {"token_id": "pxproxy@pve!daemon", "secret": "s"}
ROOT = {"username": "root@pam", "password": "p"}


def _config(home: dict[str, str], lab: dict[str, str]) -> Config:
    stop = {"timeout": "10m", "before_stop": {"exec": ["say", "bye"]}}
    return Config.model_validate(
        {
            "proxmox": [
                {"name": "home", "url": "https://a:8006", **home},
                {"name": "lab", "url": "https://b:8006", **lab},
            ],
            "routes": [
                {"host": "mc.t.test", "guest": "home:101", "port": 25565, "idle": stop},
                {"host": "vm.t.test", "guest": "home:102", "port": 80, "idle": stop},
                {"host": "ct.t.test", "guest": "lab:201", "port": 80, "idle": stop},
                {"host": "plain.t.test", "guest": "home:103", "port": 80},
            ],
        }
    )


def _view() -> Inventory:
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build(
            "home",
            [
                make_guest(101, "mc", cluster="home"),
                make_guest(102, "vm", cluster="home", kind="qemu"),
                make_guest(103, "plain", cluster="home"),
            ],
            (),
        )
    )
    inventory.publish(ClusterSnapshot.build("lab", [make_guest(201, "ct", cluster="lab")], ()))
    return inventory


def test_a_container_on_a_cluster_without_a_root_password_is_warned_about() -> None:
    view = _view().snapshot
    [warning] = before_stop_warnings(_config(TOKEN, ROOT), view)
    # Not the VM (its command goes through the guest agent), not the route without idle.
    assert warning.startswith("routes[0].idle.before_stop: home:101 is a container")
    assert "cluster home needs username: root@pam and password" in warning
    assert before_stop_warnings(_config(ROOT, ROOT), view) == []
    both = before_stop_warnings(_config(TOKEN, TOKEN), view)
    assert [w.split(":", 1)[0] for w in both] == [
        "routes[0].idle.before_stop",
        "routes[2].idle.before_stop",
    ]


def test_a_non_root_password_user_is_no_shell_either() -> None:
    other = {"username": "admin@pve", "password": "p"}
    assert len(before_stop_warnings(_config(other, ROOT), _view().snapshot)) == 1
