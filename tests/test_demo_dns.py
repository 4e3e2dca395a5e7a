"""The demo's DNS responder takes 5353 when it is free and a free port when it is not
(avahi-daemon holds 5353 for mDNS on many desktops): the demo starts either way."""

from __future__ import annotations

import contextlib
import socket

from pxproxy.demo import dns_address


def test_an_address_asked_for_is_kept() -> None:
    assert dns_address("127.0.0.1:5300") == "127.0.0.1:5300"


def test_a_busy_5353_gives_a_free_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        # Already held by something else (mDNS) is busy all the same.
        with contextlib.suppress(OSError):
            holder.bind(("127.0.0.1", 5353))
        assert dns_address(None) == "127.0.0.1:0"
