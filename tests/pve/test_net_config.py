from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.pve.net_config import (
    parse_address,
    parse_property_string,
    static_ips_from_lxc_config,
    static_ips_from_qemu_config,
)

LXC_NET = (
    "name=eth0,bridge=vmbr0,firewall=1,hwaddr=BC:24:11:AA:BB:CC,ip=10.0.0.5/24,"
    "gw=10.0.0.1,ip6=fd00::5/64,type=veth"
)


def ips(*texts: str) -> list[IPv4Address | IPv6Address]:
    return [ip_address(t) for t in texts]


class TestParsePropertyString:
    def test_lxc_net(self) -> None:
        assert parse_property_string(LXC_NET) == {
            "name": "eth0",
            "bridge": "vmbr0",
            "firewall": "1",
            "hwaddr": "BC:24:11:AA:BB:CC",
            "ip": "10.0.0.5/24",
            "gw": "10.0.0.1",
            "ip6": "fd00::5/64",
            "type": "veth",
        }

    def test_qemu_net(self) -> None:
        assert parse_property_string("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1") == {
            "virtio": "BC:24:11:AA:BB:CC",
            "bridge": "vmbr0",
            "firewall": "1",
        }

    def test_default_key(self) -> None:
        assert parse_property_string("local-lvm:vm-100-disk-0,size=32G") == {
            "": "local-lvm:vm-100-disk-0",
            "size": "32G",
        }

    def test_bare_item_only_allowed_first(self) -> None:
        assert parse_property_string("size=32G,local-lvm:vm-100-disk-0") == {"size": "32G"}

    def test_value_may_contain_equals(self) -> None:
        assert parse_property_string("a=b=c") == {"a": "b=c"}

    def test_first_duplicate_wins(self) -> None:
        assert parse_property_string("ip=10.0.0.1/24,ip=10.0.0.2/24") == {"ip": "10.0.0.1/24"}

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", {}),
            (",,,", {}),
            ("=x,ip=dhcp", {"ip": "dhcp"}),
            ("ip=,gw=1.2.3.4", {"gw": "1.2.3.4"}),
            ("k\x00=v,ok=1", {"ok": "1"}),
            ("ключ=v,ok=1", {"ok": "1"}),
            (" ip = dhcp , name=eth0 ", {"ip": "dhcp", "name": "eth0"}),
            (",bare,x=1", {"": "bare", "x": "1"}),
        ],
    )
    def test_malformed_items_skipped(self, text: str, expected: dict[str, str]) -> None:
        assert parse_property_string(text) == expected

    def test_non_string(self) -> None:
        assert parse_property_string(None) == {}  # type: ignore[arg-type]

    @given(st.text())
    def test_never_raises(self, text: str) -> None:
        result = parse_property_string(text)
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in result.items())


class TestParseAddress:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("10.0.0.5/24", "10.0.0.5"),
            ("10.0.0.5", "10.0.0.5"),
            ("fd00::5/64", "fd00::5"),
            ("fe80::1%eth0/64", "fe80::1"),
            ("fe80::1%6", "fe80::1"),
            (" 192.168.1.1/32 ", "192.168.1.1"),
        ],
    )
    def test_valid(self, text: str, expected: str) -> None:
        assert parse_address(text) == ip_address(expected)

    @pytest.mark.parametrize(
        "text",
        ["", "dhcp", "10.0.0.5/33", "10.0.0.5/", "10.0.0.256", "fd00::5/129", "1" * 10_000, 5],
    )
    def test_invalid(self, text: object) -> None:
        assert parse_address(text) is None


class TestLxcConfig:
    def test_reference_sample(self) -> None:
        config = {"net0": LXC_NET, "hostname": "ct", "tags": "web"}
        assert static_ips_from_lxc_config(config) == ips("10.0.0.5", "fd00::5")

    @pytest.mark.parametrize(
        ("net", "expected"),
        [
            ("name=eth0,ip=dhcp,ip6=auto", []),
            ("name=eth0,ip=manual,ip6=manual", []),
            ("name=eth0,ip=dhcp,ip6=dhcp", []),
            ("name=eth0,ip=dhcp,ip6=fd00::7/64", ["fd00::7"]),
            ("name=eth0,ip=10.1.2.3/16,ip6=auto", ["10.1.2.3"]),
            ("name=eth0,ip=10.1.2.3,ip6=fd00::7", ["10.1.2.3", "fd00::7"]),
            ("name=eth0,bridge=vmbr0", []),
            ("name=eth0,ip=fd00::7/64", []),  # wrong family for ip=
            ("name=eth0,ip6=10.1.2.3/24", []),  # wrong family for ip6=
            ("name=eth0,ip=10.1.2.3/40,ip6=garbage", []),
        ],
    )
    def test_value_forms(self, net: str, expected: list[str]) -> None:
        assert static_ips_from_lxc_config({"net0": net}) == ips(*expected)

    def test_index_order_and_dedup(self) -> None:
        config: dict[str, object] = {
            "net10": "name=eth2,ip=10.0.0.10/24",
            "net2": "name=eth1,ip=10.0.0.2/24,ip6=fd00::2/64",
            "net0": "name=eth0,ip6=fd00::1/64,ip=10.0.0.1/24",
            "net31": "name=eth31,ip=10.0.0.2/24",
        }
        assert static_ips_from_lxc_config(config) == ips(
            "10.0.0.1", "fd00::1", "10.0.0.2", "fd00::2", "10.0.0.10"
        )

    def test_hostile_keys_and_values_ignored(self) -> None:
        config: dict[str, object] = {
            "net32": "ip=10.0.0.32/24",
            "net99": "ip=10.0.0.99/24",
            "net0x": "ip=10.0.0.100/24",
            "net-1": "ip=10.0.0.101/24",
            "net00": "ip=10.0.0.102/24",
            "Net1": "ip=10.0.0.103/24",
            "net1": 12345,
            "net2": None,
            "net3": ["ip=10.0.0.104/24"],
            "net4": "ip=10.0.0.4/24\x00,ip6=\U0001f600",
            "net5": "ip=" + "9" * 100_000,
            "ipconfig0": "ip=10.0.0.105/24",
            "net6": "ip=10.0.0.6/24",
        }
        assert static_ips_from_lxc_config(config) == ips("10.0.0.6")

    def test_non_mapping(self) -> None:
        assert static_ips_from_lxc_config(["net0"]) == []  # type: ignore[arg-type]


class TestQemuConfig:
    def test_cloud_init(self) -> None:
        config: dict[str, object] = {
            "net0": "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1",
            "ipconfig0": "ip=192.168.1.20/24,gw=192.168.1.1,ip6=2001:db8::20/64,gw6=2001:db8::1",
            "ipconfig1": "ip=dhcp,ip6=auto",
            "ipconfig2": "ip=dhcp,ip6=dhcp",
            "ipconfig3": "ip6=2001:db8::30/64",
            "ipconfig32": "ip=192.168.1.32/24",
            "agent": 1,
        }
        assert static_ips_from_qemu_config(config) == ips(
            "192.168.1.20", "2001:db8::20", "2001:db8::30"
        )

    def test_lxc_keys_not_used(self) -> None:
        assert static_ips_from_qemu_config({"net0": "ip=10.0.0.5/24"}) == []


_key = st.one_of(
    st.sampled_from([f"{p}{i}" for p in ("net", "ipconfig") for i in range(-1, 40)]),
    st.text(max_size=12),
)
_ip_value = st.one_of(
    st.sampled_from(["dhcp", "manual", "auto", "10.0.0.1/24", "fd00::1/64", "1.2.3.4"]),
    st.ip_addresses().map(str),
    st.text(max_size=40),
)
_prop_string = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["ip", "ip6", "gw", "name", ""]), _ip_value).map("=".join),
        st.text(max_size=20),
    ),
    max_size=6,
).map(",".join)
_value = st.one_of(
    _prop_string,
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=5), max_size=3),
)


@given(st.dictionaries(_key, _value, max_size=12))
def test_config_parsers_never_raise(config: dict[str, object]) -> None:
    for parse in (static_ips_from_lxc_config, static_ips_from_qemu_config):
        result = parse(config)
        assert all(isinstance(a, IPv4Address | IPv6Address) for a in result)
        assert len(result) == len(set(result))


@given(st.lists(st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=32))
def test_lxc_order_property(pairs: list[tuple[IPv4Address, IPv6Address]]) -> None:
    config: dict[str, object] = {
        f"net{i}": f"name=eth{i},ip={v4}/32,ip6={v6}/128" for i, (v4, v6) in enumerate(pairs)
    }
    expected = list(dict.fromkeys(a for pair in pairs for a in pair))
    assert static_ips_from_lxc_config(config) == expected
