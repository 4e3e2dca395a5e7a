"""With `proxy.tls`, the companions reach pxproxy's proxy listener over HTTPS: Traefik's parked
services and nginx's fallback say https, and the recipes whose one upstream cannot speak
plain HTTP to a guest and HTTPS to pxproxy (Caddy, HAProxy) refuse, saying why."""

from __future__ import annotations

from typing import Any

import pytest

from pxproxy.config.companion import TraefikOptions
from pxproxy.config.models import Config
from pxproxy.integrations.names import traefik_service_name
from pxproxy.integrations.recipes import RecipeError, default_endpoints, recipe
from pxproxy.integrations.traefik import INSECURE_TRANSPORT, LISTENER_TRANSPORT, traefik_dynamic
from pxproxy.routing.endpoints import ProxyEndpoints, endpoints_for
from pxproxy.wake.contract import WakeState

from ..builders import make_guest
from .support import Gates, route, route_set, snapshot

TLS = {"tls": {"certificates": [{"cert": "/etc/pxproxy/site.crt", "key": "/etc/pxproxy/site.key"}]}}


def config(*, tls: bool = True, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "proxmox": [{"url": "https://pve.example:8006", "token_id": "a@pve!b", "secret": "s"}],
        "listen": {"proxy": "0.0.0.0:8443"},
        "dns": {"listen": "127.0.0.1:5353", "zone": "pve.internal", "ttl": "2s"},
        "routes": [
            {"host": "wiki.example.com", "guest": "wiki", "port": 80},
            {"host": "git.example.com", "guest": "git", "port": 3000},
        ],
        **({"proxy": TLS} if tls else {}),
    }
    data.update(extra)
    return Config.model_validate(data)


def test_the_listener_url_is_https_when_tls_is_on() -> None:
    assert default_endpoints(config()).http_url() == "https://127.0.0.1:8443"
    assert default_endpoints(config(tls=False)).http_url() == "http://127.0.0.1:8443"
    live = endpoints_for(None, ("::", 8443), {}, tls=True)
    assert live.http_url() == "https://[::1]:8443"


def test_traefik_sends_a_parked_route_to_pxproxy_over_https_without_verifying() -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=80)
    secure = route(host="git.example.com", guest="git", port=8443, scheme="https")
    endpoints = ProxyEndpoints(("127.0.0.1", 8443), tls=True)
    snap = snapshot(
        make_guest(101, "wiki", ips=("10.0.0.5",)), make_guest(102, "git", ips=("10.0.0.6",))
    )
    gates = Gates({"wiki": WakeState.ASLEEP})
    rendered = traefik_dynamic(route_set(wiki, secure), snap, gates, TraefikOptions(), endpoints)
    http = rendered["http"]
    parked = http["services"][traefik_service_name(wiki)]["loadBalancer"]
    assert parked["servers"] == [{"url": "https://127.0.0.1:8443"}]
    assert parked["serversTransport"] == LISTENER_TRANSPORT
    # A ready https guest keeps its own transport beside the listener's.
    assert http["serversTransports"] == {
        LISTENER_TRANSPORT: {"insecureSkipVerify": True},
        INSECURE_TRANSPORT: {"insecureSkipVerify": True},
    }
    plain = traefik_dynamic(
        route_set(wiki), snap, gates, TraefikOptions(), ProxyEndpoints(("127.0.0.1", 8080))
    )
    assert "serversTransports" not in plain["http"]


def test_nginx_falls_back_to_pxproxy_over_https() -> None:
    text = recipe("nginx", config())
    assert text.count("proxy_pass https://127.0.0.1:8443;") == 2  # one @pxproxy per server
    assert "proxy_pass http://127.0.0.1:8443;" not in text
    assert "proxy_pass http://$pxproxy_wiki_example_com_" in text  # the guest stays plain
    assert "proxy_pass http://127.0.0.1:8443;" in recipe("nginx", config(tls=False))


@pytest.mark.parametrize("kind", ["caddy", "haproxy"])
def test_one_upstream_recipes_refuse_plain_guests_behind_a_tls_listener(kind: Any) -> None:
    with pytest.raises(RecipeError) as info:
        recipe(kind, config())
    message = str(info.value)
    assert "with proxy.tls, pxproxy's proxy listener speaks HTTPS" in message
    assert "wiki.example.com" in message
    assert "git.example.com" in message
    # Guests that speak HTTPS themselves share the upstream's TLS (unverified) with pxproxy.
    secure = [{"host": "wiki.example.com", "guest": "wiki", "port": 443, "scheme": "https"}]
    assert "wiki" in recipe(kind, config(routes=secure))
    assert recipe(kind, config(tls=False))
