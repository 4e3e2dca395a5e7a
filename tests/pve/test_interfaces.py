from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.pve.interfaces import (
    addresses_from_agent_interfaces,
    addresses_from_lxc_interfaces,
    is_usable_address,
)

# /nodes/node1/lxc/101/interfaces, PVE 8.1-8.3 (pve-reference.md).
LXC_PVE_81 = json.loads(
    '[{"inet":"127.0.0.1/8","hwaddr":"00:00:00:00:00:00","name":"lo","inet6":"::1/128"},'
    '{"inet6":"fe80::be24:11ff:fe89:6707/64","name":"eth0","hwaddr":"bc:24:11:89:67:07",'
    '"inet":"192.168.3.95/22"}]'
)

# PVE 8.4 adds ip-addresses; legacy inet/inet6 keep only the last address of each family.
LXC_PVE_84 = [
    {
        "name": "lo",
        "hwaddr": "00:00:00:00:00:00",
        "hardware-address": "00:00:00:00:00:00",
        "inet": "127.0.0.1/8",
        "inet6": "::1/128",
        "ip-addresses": [
            {"ip-address-type": "inet", "ip-address": "127.0.0.1", "prefix": "8"},
            {"ip-address-type": "inet6", "ip-address": "::1", "prefix": "128"},
        ],
    },
    {
        "name": "eth0",
        "hwaddr": "bc:24:11:89:67:07",
        "hardware-address": "bc:24:11:89:67:07",
        "inet": "192.168.3.96/22",
        "inet6": "fe80::be24:11ff:fe89:6707/64",
        "ip-addresses": [
            {"ip-address-type": "inet", "ip-address": "192.168.3.95", "prefix": "22"},
            {"ip-address-type": "inet", "ip-address": "192.168.3.96", "prefix": 22},
            {"ip-address-type": "inet6", "ip-address": "2001:db8::95", "prefix": "64"},
            {"ip-address-type": "inet6", "ip-address": "fe80::be24:11ff:fe89:6707", "prefix": 64},
        ],
    },
]

# agent/network-get-interfaces of a Windows guest, unwrapped from {"data": ...}.
AGENT_WINDOWS = {
    "result": [
        {
            "name": "Ethernet",
            "hardware-address": "bc:24:11:12:34:56",
            "ip-addresses": [
                {
                    "ip-address-type": "ipv6",
                    "ip-address": "fe80::1c2d:3e4f:5a6b:7c8d%6",
                    "prefix": 64,
                },
                {"ip-address-type": "ipv4", "ip-address": "192.168.10.50", "prefix": 24},
            ],
            "statistics": {"rx-bytes": 1, "tx-bytes": 2},
        },
        {
            "name": "Loopback Pseudo-Interface 1",
            "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
            ],
        },
    ]
}


def ips(*texts: str) -> list[IPv4Address | IPv6Address]:
    return [ip_address(t) for t in texts]


class TestLxc:
    def test_pve_81_sample(self) -> None:
        assert addresses_from_lxc_interfaces(LXC_PVE_81) == ips(
            "127.0.0.1", "::1", "192.168.3.95", "fe80::be24:11ff:fe89:6707"
        )

    def test_pve_84_prefers_ip_addresses(self) -> None:
        assert addresses_from_lxc_interfaces(LXC_PVE_84) == ips(
            "127.0.0.1",
            "::1",
            "192.168.3.95",
            "192.168.3.96",
            "2001:db8::95",
            "fe80::be24:11ff:fe89:6707",
        )

    def test_empty_ip_addresses_wins_over_legacy(self) -> None:
        data = [{"name": "eth0", "inet": "10.0.0.1/24", "ip-addresses": []}]
        assert addresses_from_lxc_interfaces(data) == []

    def test_garbled_ip_addresses_falls_back_to_legacy(self) -> None:
        data = [{"name": "eth0", "inet": "10.0.0.1/24", "ip-addresses": None}]
        assert addresses_from_lxc_interfaces(data) == ips("10.0.0.1")

    def test_stopped_container(self) -> None:
        assert addresses_from_lxc_interfaces(None) == []

    def test_legacy_lists_and_zones(self) -> None:
        data = [
            {
                "name": "eth0",
                "inet": "10.0.0.1/24 10.0.0.2/24,10.0.0.3/24, 10.0.0.1/24",
                "inet6": "fe80::1%eth0/64",
            }
        ]
        assert addresses_from_lxc_interfaces(data) == ips(
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "fe80::1"
        )

    def test_dedup_across_interfaces(self) -> None:
        data = [{"inet": "10.0.0.1/24"}, {"inet": "10.0.0.1/32", "inet6": "fd00::1/64"}]
        assert addresses_from_lxc_interfaces(data) == ips("10.0.0.1", "fd00::1")

    @pytest.mark.parametrize(
        "data",
        [
            {},
            "10.0.0.1",
            42,
            {"data": [{"inet": "10.0.0.1/24"}]},
            [None, 1, "x", ["inet"]],
            [{"inet": 5, "inet6": ["::1"]}],
            [{"inet": "10.0.0.256/24", "inet6": "zz::1/64"}],
            [{"inet": "\x00\u2603" * 1000}],
            [{"ip-addresses": [None, 1, {"ip-address": 7}, {"ip-address": "nope"}]}],
        ],
    )
    def test_malformed_yields_nothing(self, data: object) -> None:
        assert addresses_from_lxc_interfaces(data) == []

    def test_malformed_entries_skipped_not_fatal(self) -> None:
        data = [
            "junk",
            {"ip-addresses": [{"ip-address": "bad"}, {"ip-address": "10.0.0.9", "prefix": "x"}]},
            {"name": "eth1", "inet": "garbage 10.0.0.10/24"},
        ]
        assert addresses_from_lxc_interfaces(data) == ips("10.0.0.9", "10.0.0.10")


class TestAgent:
    def test_windows_sample(self) -> None:
        assert addresses_from_agent_interfaces(AGENT_WINDOWS) == ips(
            "fe80::1c2d:3e4f:5a6b:7c8d", "192.168.10.50", "::1", "127.0.0.1"
        )

    def test_zone_stripped_address_has_no_scope(self) -> None:
        (addr,) = addresses_from_agent_interfaces([{"ip-addresses": [{"ip-address": "fe80::1%6"}]}])
        assert isinstance(addr, IPv6Address)
        assert addr.scope_id is None
        assert addr == ip_address("fe80::1")

    def test_bare_list(self) -> None:
        assert addresses_from_agent_interfaces(AGENT_WINDOWS["result"]) == ips(
            "fe80::1c2d:3e4f:5a6b:7c8d", "192.168.10.50", "::1", "127.0.0.1"
        )

    def test_linux_guest_dedup(self) -> None:
        data = {
            "result": [
                {"name": "eth0", "ip-addresses": [{"ip-address": "10.0.0.5", "prefix": 24}]},
                {"name": "eth0:1", "ip-addresses": [{"ip-address": "10.0.0.5", "prefix": 32}]},
                {"name": "docker0"},
            ]
        }
        assert addresses_from_agent_interfaces(data) == ips("10.0.0.5")

    @pytest.mark.parametrize(
        "data",
        [
            None,
            {},
            {"result": None},
            {"result": {"name": "eth0"}},
            {"error": {"class": "GenericError", "desc": "not running"}},
            [None, "x", {"ip-addresses": "10.0.0.1"}],
            [{"ip-addresses": [{"ip-address": ["10.0.0.1"]}, {"ip-address": "%6"}]}],
        ],
    )
    def test_malformed_yields_nothing(self, data: object) -> None:
        assert addresses_from_agent_interfaces(data) == []


class TestUsable:
    @pytest.mark.parametrize(
        "text",
        [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "169.254.1.1",
            "fe80::1",
            "::ffff:169.254.1.1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "::ffff:224.0.0.1",
        ],
    )
    def test_unusable(self, text: str) -> None:
        assert is_usable_address(ip_address(text)) is False

    @pytest.mark.parametrize(
        "text",
        ["10.0.0.5", "192.168.3.95", "8.8.8.8", "fd00::5", "2001:db8::1", "::ffff:10.0.0.5"],
    )
    def test_usable(self, text: str) -> None:
        assert is_usable_address(ip_address(text)) is True

    def test_filters_reference_sample(self) -> None:
        usable = [a for a in addresses_from_lxc_interfaces(LXC_PVE_81) if is_usable_address(a)]
        assert usable == ips("192.168.3.95")


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.ip_addresses().map(str)
    | st.sampled_from(["inet", "inet6", "ipv4", "ipv6", "10.0.0.1/24", "fe80::1%6"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["result", "name", "inet", "inet6", "ip-addresses", "ip-address", "ip-address-type"]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(_json)
def test_parsers_never_raise(data: object) -> None:
    for parse in (addresses_from_lxc_interfaces, addresses_from_agent_interfaces):
        result = parse(data)
        assert all(isinstance(a, IPv4Address | IPv6Address) for a in result)
        assert len(result) == len(set(result))
        # Zones are stripped, so no address carries a scope id.
        assert all(not isinstance(a, IPv6Address) or a.scope_id is None for a in result)
        for addr in result:
            assert isinstance(is_usable_address(addr), bool)


@given(st.lists(st.ip_addresses(), max_size=10))
def test_agent_returns_every_address_in_order(addrs: list[IPv4Address | IPv6Address]) -> None:
    data = {"result": [{"name": "eth0", "ip-addresses": [{"ip-address": str(a)} for a in addrs]}]}
    assert addresses_from_agent_interfaces(data) == list(dict.fromkeys(addrs))
