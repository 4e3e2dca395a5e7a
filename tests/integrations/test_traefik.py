from __future__ import annotations

import re
from typing import Any

import pytest

from pxproxy.config.companion import TraefikOptions
from pxproxy.integrations.names import traefik_router_name, traefik_service_name
from pxproxy.integrations.traefik import (
    EXACT_PRIORITY,
    INSECURE_TRANSPORT,
    WILDCARD_PRIORITY,
    dumps,
    render_traefik,
    traefik_dynamic,
)
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.routing.route_set import RouteSet
from pxproxy.wake.contract import WakeState

from ..builders import make_guest
from .support import Gates, route, route_set, snapshot

WIKI = make_guest(101, "wiki", ips=("fd00::5", "10.0.0.5"))
V6 = make_guest(102, "v6only", ips=("fd00::6",))
BARE = make_guest(103, "bare", status="stopped")
GAME = make_guest(104, "game", ips=("10.0.0.7",))
SNAP = snapshot(WIKI, V6, BARE, GAME)
PROXY = ProxyEndpoints(("127.0.0.1", 8080), {"0.0.0.0:25565": ("127.0.0.1", 25565)})
PXPROXY_URL = "http://127.0.0.1:8080"


def render(
    routes: RouteSet,
    gates: Gates | None = None,
    options: TraefikOptions | None = None,
    endpoints: ProxyEndpoints = PROXY,
    snap: Any = SNAP,
) -> dict[str, Any]:
    return traefik_dynamic(routes, snap, gates or Gates(), options or TraefikOptions(), endpoints)


def server(config: dict[str, Any], service: str) -> str:
    servers = config["http"]["services"][service]["loadBalancer"]["servers"]
    assert len(servers) == 1
    url: str = servers[0]["url"]
    return url


def test_a_ready_route_is_one_router_to_the_guests_first_ipv4_address() -> None:
    wiki = route(host=["wiki.example.com", "Docs.Example.com"], guest="wiki", port=8080)
    options = TraefikOptions.model_validate(
        {
            "entrypoints": ["websecure"],
            "middlewares": ["auth@file", "headers"],
            "tls": {"cert_resolver": "le", "domains": ["example.com", "*.example.com"]},
        }
    )
    config = render(route_set(wiki), options=options)
    name, service = traefik_router_name(wiki), traefik_service_name(wiki)
    assert config["http"]["routers"] == {
        name: {
            "rule": "Host(`wiki.example.com`) || Host(`docs.example.com`)",
            "priority": EXACT_PRIORITY,
            "entryPoints": ["websecure"],
            "middlewares": ["auth@file", "headers"],
            "service": service,
            "tls": {
                "certResolver": "le",
                "domains": [{"main": "example.com", "sans": ["*.example.com"]}],
            },
        }
    }
    assert config["http"]["services"] == {
        service: {
            "loadBalancer": {"passHostHeader": True, "servers": [{"url": "http://10.0.0.5:8080"}]}
        }
    }
    assert "tcp" not in config
    assert "middlewares" not in config["http"]


def test_tls_without_options_is_left_out_and_empty_tls_turns_it_on() -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=80)
    name = traefik_router_name(wiki)
    assert "tls" not in render(route_set(wiki))["http"]["routers"][name]
    options = TraefikOptions.model_validate({"tls": {}})
    assert render(route_set(wiki), options=options)["http"]["routers"][name]["tls"] == {}


def test_ipv6_only_guest_is_bracketed() -> None:
    v6 = route(host="v6.example.com", guest="v6only", port=80)
    assert server(render(route_set(v6)), traefik_service_name(v6)) == "http://[fd00::6]:80"


@pytest.mark.parametrize(
    "state", [WakeState.ASLEEP, WakeState.WAKING, WakeState.STOPPING, WakeState.FAILED]
)
def test_a_parked_route_points_at_pxproxys_proxy_listener(state: WakeState) -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=80, idle={"timeout": "1m"})
    gates = Gates({"wiki": state})
    result = render_traefik(route_set(wiki), SNAP, gates, TraefikOptions(), PROXY)
    service = traefik_service_name(wiki)
    assert server(result.config, service) == PXPROXY_URL
    assert result.config["http"]["services"][service]["loadBalancer"]["passHostHeader"] is True
    assert result.parked == (service,)
    assert gates.asked == [wiki]


@pytest.mark.parametrize(
    ("guest", "why"),
    [("bare", "no address"), ("nowhere", "unknown ref"), ("pve/999", "no such vmid")],
)
def test_a_route_without_a_guest_address_points_at_pxproxy(guest: str, why: str) -> None:
    r = route(host="x.example.com", guest=guest, port=80)
    assert server(render(route_set(r)), traefik_service_name(r)) == PXPROXY_URL, why


def test_an_ambiguous_ref_points_at_pxproxy_as_the_proxy_refuses_it() -> None:
    twin = make_guest(101, "wiki", cluster="lab", ips=("10.1.0.5",))
    r = route(host="x.example.com", guest="wiki", port=80)
    config = render(route_set(r), snap=snapshot(WIKI, twin))
    assert server(config, traefik_service_name(r)) == PXPROXY_URL
    pinned = route(host="x.example.com", guest="lab:101", port=80)
    config = render(route_set(pinned), snap=snapshot(WIKI, twin))
    assert server(config, traefik_service_name(pinned)) == "http://10.1.0.5:80"


def test_path_prefix_is_an_add_prefix_middleware_only_on_the_direct_path() -> None:
    wiki = route(
        host="wiki.example.com", guest="wiki", port=80, path_prefix="/app/", idle={"timeout": "1m"}
    )
    options = TraefikOptions.model_validate({"middlewares": ["auth@file"]})
    config = render(route_set(wiki), options=options)
    name, service = traefik_router_name(wiki), traefik_service_name(wiki)
    prefix = f"{service}-prefix"
    assert config["http"]["middlewares"] == {prefix: {"addPrefix": {"prefix": "/app"}}}
    # After the user's middlewares: they see the path the client sent.
    assert config["http"]["routers"][name]["middlewares"] == ["auth@file", prefix]
    # Parked: pxproxy prepends the prefix itself, so Traefik must not.
    parked = render(route_set(wiki), gates=Gates({"wiki": WakeState.ASLEEP}), options=options)
    assert "middlewares" not in parked["http"]
    assert parked["http"]["routers"][name]["middlewares"] == ["auth@file"]
    assert server(parked, service) == PXPROXY_URL


@pytest.mark.parametrize("prefix", ["/", "", None])
def test_an_empty_path_prefix_adds_nothing(prefix: str | None) -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=80, path_prefix=prefix)
    assert "middlewares" not in render(route_set(wiki))["http"]


def test_https_upstreams_skip_verification_like_pxproxys_proxy() -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=8443, scheme="https")
    config = render(route_set(wiki))
    balancer = config["http"]["services"][traefik_service_name(wiki)]["loadBalancer"]
    assert balancer["servers"] == [{"url": "https://10.0.0.5:8443"}]
    assert balancer["serversTransport"] == INSECURE_TRANSPORT
    assert config["http"]["serversTransports"] == {INSECURE_TRANSPORT: {"insecureSkipVerify": True}}
    # Parked, Traefik speaks plain HTTP to pxproxy, which speaks HTTPS to the guest.
    parked = render(route_set(wiki), gates=Gates({"wiki": WakeState.ASLEEP}))
    assert "serversTransports" not in parked["http"]


def test_wildcards_are_host_regexps_ranked_below_exact_hosts_longest_suffix_first() -> None:
    mixed = route(host=["a.example.com", "*.example.com", "*.b.example.com"], guest="wiki", port=80)
    other = route(host="*.c.example.com", guest="game", port=80)
    routers = render(route_set(mixed, other))["http"]["routers"]
    base = traefik_router_name(mixed)
    assert {k: (v["rule"], v["priority"]) for k, v in routers.items()} == {
        base: ("Host(`a.example.com`)", EXACT_PRIORITY),
        f"{base}-1": ("HostRegexp(`^.+\\.example\\.com$`)", WILDCARD_PRIORITY + 11),
        f"{base}-2": ("HostRegexp(`^.+\\.b\\.example\\.com$`)", WILDCARD_PRIORITY + 13),
        traefik_router_name(other): (
            "HostRegexp(`^.+\\.c\\.example\\.com$`)",
            WILDCARD_PRIORITY + 13,
        ),
    }
    assert {v["service"] for k, v in routers.items() if k.startswith(base)} == {
        traefik_service_name(mixed)
    }
    # The regexp matches as pxproxy's table does: any depth below the suffix, not the suffix.
    regexp = re.compile(r"^.+\.example\.com$")
    assert regexp.match("x.example.com")
    assert regexp.match("x.y.example.com")
    assert not regexp.match("example.com")
    assert not regexp.match("xexample.com")


def test_tcp_routes_are_tcp_routers_with_their_entrypoints() -> None:
    game = route(listen="0.0.0.0:25565", guest="game", port=25565)
    other = route(listen="0.0.0.0:7777", guest="game", port=7777)
    options = TraefikOptions.model_validate({"tcp_entrypoints": {25565: "minecraft"}})
    config = render(route_set(game, other), options=options)
    assert "http" not in config
    assert config["tcp"]["routers"] == {
        traefik_router_name(game): {
            "rule": "HostSNI(`*`)",
            "entryPoints": ["minecraft"],
            "service": traefik_service_name(game),
        },
        traefik_router_name(other): {
            "rule": "HostSNI(`*`)",
            "entryPoints": ["tcp-7777"],
            "service": traefik_service_name(other),
        },
    }
    assert config["tcp"]["services"][traefik_service_name(game)] == {
        "loadBalancer": {"servers": [{"address": "10.0.0.7:25565"}]}
    }


def test_a_parked_tcp_route_points_at_pxproxys_listener_or_is_left_out() -> None:
    game = route(listen="0.0.0.0:25565", guest="game", port=25565, idle={"timeout": "1m"})
    other = route(listen="0.0.0.0:7777", guest="game", port=7777, idle={"timeout": "1m"})
    gates = Gates({"game": WakeState.ASLEEP})
    result = render_traefik(route_set(game, other), SNAP, gates, TraefikOptions(), PROXY)
    services = result.config["tcp"]["services"]
    assert services == {
        traefik_service_name(game): {"loadBalancer": {"servers": [{"address": "127.0.0.1:25565"}]}}
    }
    assert list(result.config["tcp"]["routers"]) == [traefik_router_name(game)]
    assert result.omitted == ("tcp:0.0.0.0:7777: parked, and pxproxy is not listening on it",)


def test_a_parked_http_route_without_a_proxy_listener_is_left_out_and_said_why() -> None:
    wiki = route(host="wiki.example.com", guest="wiki", port=80, idle={"timeout": "1m"})
    game = route(host="game.example.com", guest="game", port=80)
    gates = Gates({"wiki": WakeState.ASLEEP})
    result = render_traefik(route_set(wiki, game), SNAP, gates, TraefikOptions(), ProxyEndpoints())
    assert list(result.config["http"]["routers"]) == [traefik_router_name(game)]
    assert list(result.config["http"]["services"]) == [traefik_service_name(game)]
    assert result.omitted == (
        "wiki.example.com: parked, and pxproxy has no proxy listener to send it to",
    )


def test_no_routes_is_an_empty_document() -> None:
    assert render(RouteSet()) == {}


def test_the_same_inputs_give_the_same_bytes_and_keys_are_sorted() -> None:
    routes = route_set(
        route(host="z.example.com", guest="wiki", port=80, path_prefix="/z"),
        route(host="a.example.com", guest="game", port=80),
        route(listen="0.0.0.0:25565", guest="game", port=25565),
    )
    first = dumps(render(routes))
    assert first == dumps(render(routes))
    assert " " not in first.replace("Host(`z.example.com`)", "")  # compact separators
    reordered = route_set(*reversed(routes.configs))
    # The routers' names do not depend on the order of the routes.
    assert dumps(render(reordered)) == first
    routers = list(render(routes)["http"]["routers"])
    assert first.index(f'"{min(routers)}"') < first.index(f'"{max(routers)}"')
