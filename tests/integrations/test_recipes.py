"""The recipes as text: filled in from the config, and never carrying a secret. That each is
accepted and works in the real program is tests/e2e/test_real_proxies.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pxproxy.config.models import Config
from pxproxy.integrations.recipes import (
    KINDS,
    TOKEN_PLACEHOLDER,
    RecipeError,
    RecipeKind,
    dns_name,
    recipe,
)
from pxproxy.routing.endpoints import ProxyEndpoints

SECRET = "very-secret-token-value-0123"


def config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "proxmox": [{"url": "https://pve.example:8006", "token_id": "a@pve!b", "secret": "s"}],
        "listen": {"proxy": "0.0.0.0:8080", "api": "0.0.0.0:8081"},
        "api": {"tokens": [{"name": "edge", "secret": SECRET, "scopes": ["read"]}]},
        "dns": {"listen": "127.0.0.1:5353", "zone": "pve.internal", "ttl": "2s"},
        "routes": [
            {"host": "wiki.example.com", "guest": "wiki", "port": 80, "idle": {"timeout": "5m"}},
            {"host": ["git.example.com", "*.git.example.com"], "guest": "home:git", "port": 3000},
            {"host": "api.example.com", "guest": 105, "port": 9000, "path_prefix": "/v1"},
            {"listen": "0.0.0.0:25565", "guest": "mc", "port": 25565},
        ],
    }
    data.update(extra)
    return Config.model_validate(data)


@pytest.mark.parametrize("kind", KINDS)
def test_no_recipe_prints_a_secret(kind: RecipeKind) -> None:
    text = recipe(kind, config())
    assert SECRET not in text
    assert text.startswith("# ")
    assert f"`pxproxy integrations {kind}`" in text


def test_traefik_static_side_polls_the_api_with_the_token_placeholder() -> None:
    text = recipe("traefik", config(), listen="127.0.0.1:9080", poll_interval="1s")
    static = yaml.safe_load(text)
    # A wildcard API bind is reached on loopback.
    assert static["providers"]["http"] == {
        "endpoint": "http://127.0.0.1:8081/integrations/traefik",
        "pollInterval": "1s",
        "headers": {"Authorization": f"Bearer {TOKEN_PLACEHOLDER}"},
    }
    assert static["entryPoints"]["web"] == {"address": "127.0.0.1:9080"}
    assert static["entryPoints"]["tcp-25565"] == {"address": ":25565"}
    # Nothing reads Traefik's metrics here, so they stay off (they cost CPU per request),
    # and the recipe says how to turn them on.
    assert "metrics" not in static
    assert "metrics" not in static["entryPoints"]
    assert "the token `edge`" in text
    assert "metrics_url: http://127.0.0.1:8082/metrics" in text


def test_traefik_metrics_where_the_config_reads_them_and_no_token_when_public() -> None:
    text = recipe(
        "traefik",
        config(
            listen={"proxy": "127.0.0.1:8080", "api": "127.0.0.1:8081"},
            integrations={
                "public": True,
                "traefik": {
                    "entrypoints": ["web", "websecure"],
                    "metrics_url": "http://127.0.0.1:9100/metrics",
                },
            },
        ),
    )
    static = yaml.safe_load(text)
    assert "headers" not in static["providers"]["http"]
    assert TOKEN_PLACEHOLDER not in text
    assert static["entryPoints"]["metrics"] == {"address": "127.0.0.1:9100"}
    prometheus = static["metrics"]["prometheus"]
    # Only the per-service series are read; the others would only cost CPU per request.
    assert (prometheus["addServicesLabels"], prometheus["addRoutersLabels"]) == (True, False)
    assert prometheus["addEntryPointsLabels"] is False
    assert prometheus["entryPoint"] == "metrics"
    assert static["entryPoints"]["web"] == {"address": ":80"}
    assert static["entryPoints"]["websecure"] == {"address": ":443"}


def test_caddy_finds_each_route_by_srv_in_the_zone() -> None:
    text = recipe("caddy", config(), listen="127.0.0.1:9080")
    assert "\thttp_port 9080\n\tdefault_bind 127.0.0.1\n" in text
    assert "http://wiki.example.com {" in text
    assert "http://git.example.com, http://*.git.example.com {" in text
    assert "dynamic srv _80._tcp.wiki.pve.internal {" in text
    assert "dynamic srv _3000._tcp.git.pve.internal {" in text  # home:git -> git
    assert "dynamic srv _9000._tcp.105.pve.internal {" in text  # a vmid is a name there
    assert "handle /v1* {" in text
    assert text.count("resolvers 127.0.0.1:5353") == 6  # SRV lookups and the dials
    assert "refresh 2s" in text
    assert "pxproxy's proxy listener (127.0.0.1:8080)" in text


def test_nginx_resolves_a_records_and_falls_back_to_pxproxy() -> None:
    text = recipe("nginx", config(integrations={"proxy_address": "10.0.0.5:8080"}))
    assert "resolver 127.0.0.1:5353 valid=2s ipv6=off;" in text
    assert "set $pxproxy_wiki_example_com_" in text
    assert "proxy_pass http://$pxproxy_wiki_example_com_" in text
    assert ":80;" in text
    assert "location /v1 {" in text
    assert "error_page 502 504 = @pxproxy;" in text
    assert "proxy_pass http://10.0.0.5:8080;" in text  # integrations.proxy_address
    assert text.count("proxy_set_header Host $host;") == 2 * 3  # per location, per server
    assert "server_name git.example.com *.git.example.com;" in text
    assert "    listen 80;" in text  # nginx's "every address", not ":80"
    # A request that comes back to this nginx (a parked guest's port is one it listens on at
    # pxproxy's address) is closed, so the first hop falls back instead of looping.
    assert text.count("proxy_set_header X-Pxproxy-Hop 1;") == 3  # guest locations only
    assert text.count("if ($http_x_pxproxy_hop) { return 444; }") == 3  # per server


def test_haproxy_server_templates_by_srv() -> None:
    text = recipe("haproxy", config(), listen="127.0.0.1:9080")
    assert "nameserver pxproxy 127.0.0.1:5353" in text
    assert "hold valid 2s" in text
    assert "bind 127.0.0.1:9080" in text
    assert (
        "server-template guest 1 _80._tcp.wiki.pve.internal resolvers pxproxy init-addr none"
        in text
    )
    assert "-m end .git.example.com" in text
    assert "path_beg /v1" in text
    # A request caught by an address change is retried on the new address, not the old.
    assert "    option redispatch 1\n" in text


def test_the_live_proxy_endpoint_is_used_when_given() -> None:
    text = recipe("haproxy", config(), endpoints=ProxyEndpoints(http=("127.0.0.1", 40123)))
    assert "(127.0.0.1:40123)" in text


@pytest.mark.parametrize("kind", ["caddy", "nginx", "haproxy"])
def test_dns_based_recipes_need_the_responder(kind: RecipeKind) -> None:
    with pytest.raises(RecipeError, match="dns:"):
        recipe(kind, config(dns=None))


def test_a_route_host_inside_the_zone_is_its_dns_name() -> None:
    c = config(routes=[{"host": ["x.example.com", "wiki.pve.internal"], "guest": 7, "port": 80}])
    assert c.dns is not None
    assert dns_name(c.routes[0], c.dns) == "wiki.pve.internal"
    off = c.dns.model_copy(update={"route_hosts": False})
    assert dns_name(c.routes[0], off) == "7.pve.internal"
