from __future__ import annotations

from ipaddress import ip_address

import pytest

from pxproxy.config.models import IpPolicy
from pxproxy.inventory.address_policy import AddressPolicy


def select(policy: AddressPolicy, *texts: str) -> tuple[str, ...]:
    return policy.select(ip_address(t) for t in texts)


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "169.254.10.1",
        "fe80::be24:11ff:fe89:6707",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.0.1",
    ],
)
def test_default_drops_unusable(text: str) -> None:
    assert AddressPolicy().keeps(ip_address(text)) is False


@pytest.mark.parametrize(
    "text",
    ["192.168.3.95", "10.0.0.5", "172.16.0.1", "100.64.0.1", "8.8.8.8", "fd00::5", "2001:db8::1"],
)
def test_default_keeps_private_and_public(text: str) -> None:
    assert AddressPolicy().keeps(ip_address(text)) is True


def test_select_keeps_order_removes_duplicates_and_canonicalises() -> None:
    policy = AddressPolicy()
    assert select(
        policy, "127.0.0.1", "10.0.0.5", "FD00:0:0::5", "10.0.0.5", "fe80::1", "fd00::5"
    ) == ("10.0.0.5", "fd00::5")


def test_families_ipv4_only() -> None:
    policy = AddressPolicy(IpPolicy(families=("ipv4",)))
    assert select(policy, "fd00::5", "10.0.0.5", "2001:db8::1") == ("10.0.0.5",)


def test_families_ipv6_only() -> None:
    policy = AddressPolicy(IpPolicy(families=("ipv6",)))
    assert select(policy, "fd00::5", "10.0.0.5") == ("fd00::5",)


def test_include_restricts_to_networks() -> None:
    policy = AddressPolicy(IpPolicy(include=("10.0.0.0/8", "fd00::/8")))
    assert select(policy, "192.168.1.5", "10.2.3.4", "fd00::5", "2001:db8::1") == (
        "10.2.3.4",
        "fd00::5",
    )


def test_include_of_one_family_drops_the_other() -> None:
    # An include list names every wanted network: an IPv6 address matches none of the v4 ones.
    policy = AddressPolicy(IpPolicy(include=("10.0.0.0/8",)))
    assert select(policy, "10.0.0.1", "fd00::5") == ("10.0.0.1",)


def test_exclude_drops_networks() -> None:
    policy = AddressPolicy(IpPolicy(exclude=("10.1.0.0/16", "172.17.0.0/16")))
    assert select(policy, "10.1.2.3", "10.2.3.4", "172.17.0.2") == ("10.2.3.4",)


def test_exclude_wins_over_include() -> None:
    policy = AddressPolicy(IpPolicy(include=("10.0.0.0/8",), exclude=("10.1.0.0/16",)))
    assert select(policy, "10.1.0.5", "10.2.0.5", "192.168.0.5") == ("10.2.0.5",)


def test_include_cannot_bring_back_loopback() -> None:
    policy = AddressPolicy(IpPolicy(include=("127.0.0.0/8",)))
    assert select(policy, "127.0.0.1") == ()


def test_non_strict_networks_accepted() -> None:
    # Host bits set ("10.0.0.1/8") are accepted like the network they belong to.
    policy = AddressPolicy(IpPolicy(include=("10.0.0.1/8",)))
    assert select(policy, "10.9.9.9") == ("10.9.9.9",)


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not-a-network", "fd00::/129"])
def test_policy_rejects_bad_networks(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a network"):
        IpPolicy(include=(bad,))


def test_loopback_option_keeps_lab_addresses_but_not_lo() -> None:
    keep = AddressPolicy(IpPolicy(loopback=True))
    plain = AddressPolicy(IpPolicy())
    lab = ip_address("127.10.0.101")
    assert keep.keeps(lab)
    assert not plain.keeps(lab)
    assert not keep.keeps(ip_address("127.0.0.1"))
    assert not keep.keeps(ip_address("::1"))
