"""UDP routes in companion mode: Traefik's `udp` routers and services, the Traefik recipe's
`/udp` entrypoints, and DNS SRV under `_<port>._udp`, each pointing at the guest while it is
ready and at pxproxy's UDP listener while it is parked."""

from __future__ import annotations

from typing import Any

import pytest

from pxproxy.config.companion import TraefikOptions
from pxproxy.config.models import Config
from pxproxy.dns.answer import Answerer
from pxproxy.integrations.names import traefik_router_name, traefik_service_name
from pxproxy.integrations.recipes import recipe
from pxproxy.integrations.traefik import render_traefik
from pxproxy.routing.endpoints import ProxyEndpoints, endpoints_for
from pxproxy.wake.contract import WakeState

from ..builders import make_guest
from ..dns.zone_fixtures import FakeSource, query, records, settings
from .support import Gates, route, route_set, snapshot

GAME = make_guest(104, "factorio", ips=("10.0.0.7",))
SNAP = snapshot(GAME)
UDP_LISTEN = "0.0.0.0:34197"
ENDPOINTS = ProxyEndpoints(
    ("127.0.0.1", 8080),
    {"0.0.0.0:34197": ("127.0.0.1", 45000)},  # a TCP route on the same port number
    {UDP_LISTEN: ("127.0.0.1", 34197)},
)
IDLE = {"timeout": "30m"}


def udp_route(**extra: Any) -> Any:
    return route(listen=UDP_LISTEN, protocol="udp", guest="factorio", port=34197, **extra)


def test_a_ready_udp_route_is_a_udp_router_on_its_entrypoint_to_the_guest() -> None:
    game = udp_route()
    rcon = route(listen="0.0.0.0:27015", protocol="udp", guest="factorio", port=27015)
    options = TraefikOptions.model_validate({"udp_entrypoints": {34197: "factorio"}})
    config = render_traefik(route_set(game, rcon), SNAP, Gates(), options, ENDPOINTS).config
    assert set(config) == {"udp"}
    assert config["udp"]["routers"] == {
        traefik_router_name(game): {
            "entryPoints": ["factorio"],
            "service": traefik_service_name(game),
        },
        traefik_router_name(rcon): {
            "entryPoints": ["udp-27015"],
            "service": traefik_service_name(rcon),
        },
    }
    assert config["udp"]["services"][traefik_service_name(game)] == {
        "loadBalancer": {"servers": [{"address": "10.0.0.7:34197"}]}
    }
    assert traefik_service_name(game).startswith("pxproxy-udp-34197-")


def test_a_parked_udp_route_points_at_pxproxys_udp_listener_or_is_left_out() -> None:
    game = udp_route(idle=IDLE)
    unbound = route(listen="0.0.0.0:2456", protocol="udp", guest="factorio", port=2456, idle=IDLE)
    gates = Gates({"factorio": WakeState.ASLEEP})
    result = render_traefik(route_set(game, unbound), SNAP, gates, TraefikOptions(), ENDPOINTS)
    assert result.config["udp"]["services"] == {
        traefik_service_name(game): {"loadBalancer": {"servers": [{"address": "127.0.0.1:34197"}]}}
    }
    assert result.parked == (traefik_service_name(game),)
    assert result.omitted == ("udp:0.0.0.0:2456: parked, and pxproxy is not listening on it",)


def test_a_tcp_and_a_udp_route_on_one_port_are_two_routers() -> None:
    tcp = route(listen=UDP_LISTEN, guest="factorio", port=34197)
    config = render_traefik(
        route_set(tcp, udp_route()), SNAP, Gates(), TraefikOptions(), ENDPOINTS
    ).config
    assert list(config["tcp"]["routers"]) == [traefik_router_name(tcp)]
    assert list(config["udp"]["routers"]) == [traefik_router_name(udp_route())]
    assert traefik_router_name(tcp) != traefik_router_name(udp_route())


def test_the_traefik_recipe_opens_a_udp_entrypoint() -> None:
    config = Config.model_validate(
        {
            "proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}],
            "routes": [
                {"listen": UDP_LISTEN, "protocol": "udp", "guest": "factorio", "port": 34197}
            ],
        }
    )
    text = recipe("traefik", config)
    assert "  udp-34197:  # UDP route udp:0.0.0.0:34197; pick a port pxproxy does not use\n" in text
    assert '    address: ":34197/udp"\n' in text


def test_endpoints_name_udp_listeners_as_reachable_addresses() -> None:
    found = endpoints_for(None, ("0.0.0.0", 8080), {}, {UDP_LISTEN: ("0.0.0.0", 34197)})
    assert found.udp == {UDP_LISTEN: ("127.0.0.1", 34197)}


def dns_source() -> FakeSource:
    return FakeSource(
        [make_guest(104, "factorio", ips=("10.0.0.7",))],
        routes=[
            {
                "listen": UDP_LISTEN,
                "protocol": "udp",
                "guest": "factorio",
                "port": 34197,
                "idle": {},
            },
            {"listen": "0.0.0.0:34198", "guest": "factorio", "port": 34197, "idle": {}},
        ],
        endpoints=ProxyEndpoints(
            None,
            {"0.0.0.0:34198": ("127.0.0.1", 34198)},
            {UDP_LISTEN: ("127.0.0.1", 44197)},
        ),
    )


def srv(source: FakeSource, name: str) -> list[str]:
    return records(Answerer(settings(), source).respond(query(name, "SRV")).answer)


def test_udp_srv_answers_the_guest_port_while_ready() -> None:
    assert srv(dns_source(), "_34197._udp.factorio.pve.internal") == [
        "_34197._udp.factorio.pve.internal. SRV 0 1 34197 factorio.pve.internal."
    ]


@pytest.mark.parametrize("state", [WakeState.ASLEEP, WakeState.WAKING])
def test_a_parked_udp_route_answers_its_bound_port_apart_from_the_tcp_one(
    state: WakeState,
) -> None:
    source = dns_source()
    source.states["factorio"] = state
    assert srv(source, "_34197._udp.factorio.pve.internal") == [
        "_34197._udp.factorio.pve.internal. SRV 0 1 44197 factorio.pve.internal."
    ]
    assert srv(source, "_34197._tcp.factorio.pve.internal") == [
        "_34197._tcp.factorio.pve.internal. SRV 0 1 34198 factorio.pve.internal."
    ]
    # A UDP port no route of pxproxy's listens for keeps the guest's own number.
    assert srv(source, "_2456._udp.factorio.pve.internal") == [
        "_2456._udp.factorio.pve.internal. SRV 0 1 2456 factorio.pve.internal."
    ]


def test_a_parked_guest_with_only_a_udp_route_answers_its_listener_address() -> None:
    source = FakeSource(
        [make_guest(104, "factorio", ips=("10.0.0.7",))],
        routes=[
            {
                "listen": UDP_LISTEN,
                "protocol": "udp",
                "guest": "factorio",
                "port": 34197,
                "idle": {},
            }
        ],
        endpoints=ProxyEndpoints(None, {}, {UDP_LISTEN: ("127.0.0.3", 34197)}),
    )
    source.states["factorio"] = WakeState.ASLEEP
    response = Answerer(settings(), source).respond(query("factorio.pve.internal", "A"))
    assert records(response.answer) == ["factorio.pve.internal. A 127.0.0.3"]
    # The `_udp` label itself exists, empty.
    empty = Answerer(settings(), source).respond(query("_udp.factorio.pve.internal", "SRV"))
    assert (empty.rcode(), empty.answer) == (0, [])
