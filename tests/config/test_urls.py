from __future__ import annotations

import re

import pytest

from pxproxy.config.urls import check_cluster_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://pve.example.com:8006", "https://pve.example.com:8006"),
        ("https://pve.example.com:8006/", "https://pve.example.com:8006"),
        ("http://10.0.0.1", "http://10.0.0.1"),
        ("https://[fd00::1]:8006", "https://[fd00::1]:8006"),
    ],
)
def test_good_urls(url: str, expected: str) -> None:
    assert check_cluster_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("pve.example.com", "'pve.example.com' has no scheme: write https://pve.example.com:8006"),
        ("pve:8006", "'pve:8006' has no scheme: write https://pve:8006"),
        ("pve:8006/api2/json", "'pve:8006/api2/json' has no scheme: write https://pve:8006"),
        (
            "https://pve:8006/api2/json",
            "'https://pve:8006/api2/json' has a path (/api2/json): give only the scheme, host "
            "and port, like https://pve:8006",
        ),
        ("ftp://pve", "the scheme must be https:// (or http://), not ftp://"),
        ("https://", "'https://' has no host: write it like https://pve.example.com:8006"),
        ("https://pve:99999", "'https://pve:99999': the port must be a number from 1 to 65535"),
        ("https://pve:x", "'https://pve:x': the port must be a number from 1 to 65535"),
        ("https://pve .lan", "'https://pve .lan' contains white space"),
        ("", "is empty: write the address of a node, like https://pve.example.com:8006"),
        (
            "https://root:pw@pve:8006",
            "must not hold credentials: use token_id/secret or username/password",
        ),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_cluster_url(url)
