from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pxproxy.cli import main
from pxproxy.config.loader import (
    ConfigError,
    config_path,
    key_path,
    load_config,
    parse_config,
    substitute_env,
)
from pxproxy.config.models import Config, cluster_label, is_loopback_host, split_address

FINGERPRINT_HEX = "ab" * 32
FINGERPRINT_COLONS = ":".join(["AB"] * 32)

MINIMAL = """
proxmox:
  - url: https://pve.example.com:8006
    token_id: pxproxy@pve!daemon
    secret: token-secret-value
"""


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), env={} if env is None else env)


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return str(info.value)


def error_lines(text: str) -> list[str]:
    """The per-key lines of a validation error (after the header line)."""
    return error_of(text).splitlines()[1:]


def cluster(extra: str) -> str:
    """MINIMAL with extra lines appended to the first cluster entry."""
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "    ")


# ------------------------------------------------------------------- valid configs


def test_minimal_config_defaults() -> None:
    config = parse(MINIMAL)
    (cl,) = config.proxmox
    assert cl.url == "https://pve.example.com:8006"
    assert cl.poll_interval == 3.0
    assert cl.tls.verify is True
    assert config.listen.api == "127.0.0.1:8081"
    assert config.routes == ()
    assert config.cluster_names() == ["pve.example.com"]


def test_full_design_example_parses() -> None:
    config = parse(
        """
        proxmox:
          - name: home
            url: https://pve.example.com:8006
            token_id: pxproxy@pve!daemon
            secret: ${PVE_TOKEN_SECRET}
            username: root@pam
            password: ${PVE_PASSWORD}
            tls: {verify: true, ca_file: null, fingerprint: null}
            poll_interval: 3s
        listen: {proxy: "0.0.0.0:8080", api: "127.0.0.1:8081"}
        guests:
          wiki: {aliases: [docs, kb]}
        api:
          tokens:
            - {name: ops, secret: "${OPS_TOKEN}", scopes: [read, power, exec], guests: ["*"]}
        routes:
          - host: wiki.example.com
            guest: wiki
            port: 80
            idle:
              timeout: 15m
              stop_method: shutdown
              wake_timeout: 2m
              ready: {http: /healthz}
              depends_on: [db]
          - listen: "0.0.0.0:25565"
            guest: allthemons
            port: 25565
            idle: {timeout: 30m}
        """,
        env={"PVE_TOKEN_SECRET": "t", "PVE_PASSWORD": "p", "OPS_TOKEN": "o" * 20},
    )
    assert config.cluster_names() == ["home"]
    http, tcp = config.routes
    assert http.host == ("wiki.example.com",)
    assert http.idle is not None
    assert http.idle.timeout == 900.0
    assert http.idle.wake_timeout == 120.0
    assert http.idle.depends_on == ("db",)
    assert tcp.listen == "0.0.0.0:25565"
    assert tcp.idle is not None
    assert tcp.idle.timeout == 1800.0
    assert config.guests["wiki"].aliases == ("docs", "kb")
    assert config.api.tokens[0].scopes == ("read", "power", "exec")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3.0), ("15m", 900.0), ("500ms", 0.5), ("1h30m", 5400.0), ("2", 2.0)],
)
def test_durations(text: str, seconds: float) -> None:
    config = parse(cluster(f"poll_interval: {text}\nip_refresh: {text}\n"))
    assert config.proxmox[0].poll_interval == seconds
    assert config.proxmox[0].ip_refresh == seconds


def test_route_host_may_be_a_single_string_or_a_list() -> None:
    config = parse(
        MINIMAL
        + """
routes:
  - {host: a.example.com, guest: a, port: 80}
  - {host: [b.example.com, "*.c.example.com"], guest: b, port: 80}
"""
    )
    assert config.routes[0].host == ("a.example.com",)
    assert config.routes[1].host == ("b.example.com", "*.c.example.com")


def test_vmids_written_as_numbers_are_guest_refs_everywhere() -> None:
    config = parse(
        MINIMAL
        + """
guests:
  101: {aliases: [wiki]}
api:
  tokens:
    - {name: ops, secret: "0123456789abcdef", guests: [101, web]}
routes:
  - {host: a.example.com, guest: 101, port: 80, idle: {depends_on: [102]}}
"""
    )
    assert config.guests == {"101": config.guests["101"]}
    assert config.api.tokens[0].guests == ("101", "web")
    assert config.routes[0].guest == "101"
    assert config.routes[0].idle is not None
    assert config.routes[0].idle.depends_on == ("102",)


# ------------------------------------------------------------------- key paths


def test_bad_fingerprint_names_its_key_path() -> None:
    lines = error_lines(cluster("tls: {fingerprint: 'nothex'}\n"))
    assert len(lines) == 1
    assert lines[0].startswith("proxmox[0].tls.fingerprint: ")
    assert "64 hex digits" in lines[0]


def test_unknown_key_names_its_key_path() -> None:
    # One line only: an invalid entry is not also reported as a too-short list.
    assert error_lines(cluster("tsl: {verify: false}\n")) == [
        "proxmox[0].tsl: unknown key; did you mean tls?"
    ]


def test_unknown_top_level_key() -> None:
    assert error_lines(MINIMAL + "rutes: []\n") == ["rutes: unknown key; did you mean routes?"]


def test_route_port_out_of_range_names_index() -> None:
    lines = error_lines(
        MINIMAL
        + """
routes:
  - {host: a.example.com, guest: a, port: 80}
  - {host: b.example.com, guest: b, port: 70000}
"""
    )
    assert len(lines) == 1
    assert lines[0].startswith("routes[1].port: ")


def test_route_needs_host_or_listen() -> None:
    text = MINIMAL + "routes:\n  - {guest: a, port: 80}\n"
    assert error_lines(text) == ["routes[0]: a route has either host (HTTP) or listen (TCP or UDP)"]


def test_bad_route_host_is_named() -> None:
    lines = error_lines(MINIMAL + "routes:\n  - {host: 'bad host', guest: a, port: 80}\n")
    assert lines == ["routes[0]: host 'bad host' is not a hostname or *.domain"]


def test_bad_listen_address_names_its_key_path() -> None:
    lines = error_lines(MINIMAL + "listen: {api: 'localhost'}\n")
    assert len(lines) == 1
    assert lines[0].startswith("listen.api: ")
    assert "127.0.0.1:8081" in lines[0]


def test_bad_duration_names_its_key_path() -> None:
    lines = error_lines(cluster("poll_interval: 3x\n"))
    assert len(lines) == 1
    assert lines[0].startswith("proxmox[0].poll_interval: invalid duration '3x'")


def test_idle_duration_error_path() -> None:
    lines = error_lines(
        MINIMAL + "routes:\n  - {host: a.b, guest: a, port: 80, idle: {timeout: soon}}\n"
    )
    assert len(lines) == 1
    assert lines[0].startswith("routes[0].idle.timeout: invalid duration")


def test_poll_interval_too_small() -> None:
    assert error_lines(cluster("poll_interval: 10ms\n")) == [
        "proxmox[0].poll_interval: must be at least 50ms"
    ]


def test_bad_url() -> None:
    lines = error_lines(
        """
        proxmox:
          - {url: "https://pve:8006/api2/json", token_id: a@pve!t, secret: s}
        """
    )
    assert lines == [
        "proxmox[0].url: 'https://pve:8006/api2/json' has a path (/api2/json): give only the "
        "scheme, host and port, like https://pve:8006"
    ]


def test_several_errors_are_all_reported() -> None:
    lines = error_lines(
        cluster("tsl: {}\n") + "routes:\n  - {host: a.b, guest: a, port: 0}\n" + "log_level: loud\n"
    )
    paths = sorted(line.split(":", 1)[0] for line in lines)
    assert paths == ["log_level", "proxmox[0].tsl", "routes[0].port"]


def test_missing_proxmox_section() -> None:
    assert error_lines("listen: {api: '127.0.0.1:1'}\n") == ["proxmox: required, but missing"]


def test_empty_proxmox_list() -> None:
    assert error_lines("proxmox: []\n") == ["proxmox: needs at least one cluster"]


def test_bad_scope_names_token_path() -> None:
    lines = error_lines(
        MINIMAL + "api:\n  tokens:\n    - {name: ops, secret: 0123456789abcdef, scopes: [admin]}\n"
    )
    assert len(lines) == 1
    assert lines[0].startswith("api.tokens[0].scopes[0]: ")


def test_short_token_secret_is_refused_without_showing_it() -> None:
    message = error_of(MINIMAL + "api:\n  tokens:\n    - {name: ops, secret: short-secret}\n")
    assert "api.tokens[0].secret: must be at least 16 characters" in message
    assert "short-secret" not in message


def test_duplicate_token_names() -> None:
    lines = error_lines(
        MINIMAL
        + "api:\n  tokens:\n"
        + "    - {name: ops, secret: 0123456789abcdef}\n"
        + "    - {name: ops, secret: fedcba9876543210}\n"
    )
    assert lines == ["api: token names must be unique: ops"]


def test_key_path_helper() -> None:
    assert key_path(("proxmox", 0, "tls", "fingerprint")) == "proxmox[0].tls.fingerprint"
    assert key_path(("routes", 1, "port")) == "routes[1].port"
    assert key_path(()) == "(top level)"


# ------------------------------------------------------------------- several clusters


def test_several_clusters_need_names() -> None:
    lines = error_lines(
        """
        proxmox:
          - {name: home, url: "https://a:8006", token_id: a@pve!t, secret: s}
          - {url: "https://b:8006", token_id: a@pve!t, secret: s}
        """
    )
    assert lines == ["proxmox: with several clusters each needs a name; missing in proxmox[1]"]


def test_cluster_names_must_be_unique() -> None:
    lines = error_lines(
        """
        proxmox:
          - {name: home, url: "https://a:8006", token_id: a@pve!t, secret: s}
          - {name: home, url: "https://b:8006", token_id: a@pve!t, secret: s}
        """
    )
    assert lines == ["proxmox: cluster names must be unique: home"]


def test_named_clusters() -> None:
    config = parse(
        """
        proxmox:
          - {name: home, url: "https://a:8006", token_id: a@pve!t, secret: s}
          - {name: lab, url: "https://b:8006", username: root@pam, password: p}
        """
    )
    assert config.cluster_names() == ["home", "lab"]


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://pve.example.com:8006", "pve.example.com"),
        ("https://10.0.0.1", "10.0.0.1"),
        ("https://[fd00::1]:8006", "fd00::1"),
    ],
)
def test_cluster_label(url: str, label: str) -> None:
    assert cluster_label(url) == label


# ------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("", "needs credentials: token_id + secret, or username + password"),
        ("token_id: a@pve!t", "token_id and secret go together"),
        ("secret: s", "token_id and secret go together"),
        ("username: root@pam", "username and password go together"),
        ("password: p", "username and password go together"),
    ],
)
def test_credentials_validation(fields: str, message: str) -> None:
    body = f", {fields}" if fields else ""
    text = f'proxmox:\n  - {{url: "https://a:8006"{body}}}\n'
    assert error_lines(text) == [f"proxmox[0]: {message}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("token_id", "pxproxy-daemon"), ("token_id", "user@pve"), ("username", "root")],
)
def test_credential_shapes(field: str, value: str) -> None:
    partner = {"token_id": "secret: s", "username": "password: p"}[field]
    text = f'proxmox:\n  - {{url: "https://a:8006", {field}: "{value}", {partner}}}\n'
    lines = error_lines(text)
    assert len(lines) == 1
    assert lines[0].startswith(f"proxmox[0].{field}: must look like")


def test_token_and_password_together_are_fine() -> None:
    config = parse(cluster("username: root@pam\npassword: pw\n"))
    assert config.proxmox[0].token_id == "pxproxy@pve!daemon"
    assert config.proxmox[0].username == "root@pam"


# ------------------------------------------------------------------- fingerprints


@pytest.mark.parametrize(
    "value",
    [FINGERPRINT_COLONS, FINGERPRINT_HEX, FINGERPRINT_HEX.upper(), FINGERPRINT_COLONS.lower()],
)
def test_fingerprint_forms_are_normalised(value: str) -> None:
    config = parse(cluster(f"tls: {{fingerprint: '{value}'}}\n"))
    assert config.proxmox[0].tls.fingerprint == FINGERPRINT_HEX


@pytest.mark.parametrize("value", ["ab" * 31, "ab" * 33, "zz" * 32, "AB:CD"])
def test_bad_fingerprints(value: str) -> None:
    lines = error_lines(cluster(f"tls: {{fingerprint: '{value}'}}\n"))
    assert [line.split(":", 1)[0] for line in lines] == ["proxmox[0].tls.fingerprint"]


# ------------------------------------------------------------------- environment


def test_env_substitution() -> None:
    config = parse(
        """
        proxmox:
          - url: https://${PVE_HOST}:8006
            token_id: pxproxy@pve!daemon
            secret: ${PVE_SECRET}
            poll_interval: ${POLL:-5s}
        """,
        env={"PVE_HOST": "pve.lan", "PVE_SECRET": "from-env"},
    )
    (cl,) = config.proxmox
    assert cl.url == "https://pve.lan:8006"
    assert cl.secret is not None
    assert cl.secret.get_secret_value() == "from-env"
    assert cl.poll_interval == 5.0


def test_env_value_beats_default() -> None:
    config = parse(cluster("poll_interval: ${POLL:-5s}\n"), env={"POLL": "7s"})
    assert config.proxmox[0].poll_interval == 7.0


def test_empty_default() -> None:
    assert substitute_env("a${X:-}b", {}) == "ab"


def test_dollar_dollar_is_a_literal_dollar() -> None:
    config = parse(cluster("password: 'pa$$word${X}$${NOT}'\nusername: root@pam\n"), {"X": "!"})
    password = config.proxmox[0].password
    assert password is not None
    assert password.get_secret_value() == "pa$word!${NOT}"


def test_substitution_leaves_non_strings_alone() -> None:
    assert substitute_env({"a": [1, True, None, "${X}"]}, {"X": "x"}) == {"a": [1, True, None, "x"]}


def test_missing_env_var_names_key_path() -> None:
    message = error_of(cluster("password: ${PVE_PASSWORD}\nusername: root@pam\n"))
    assert "proxmox[0].password: environment variable PVE_PASSWORD is not set" in message


def test_missing_env_var_in_a_list_names_index() -> None:
    message = error_of(MINIMAL + "api:\n  tokens:\n    - {name: ops, secret: '${OPS}'}\n")
    assert "api.tokens[0].secret: environment variable OPS is not set" in message


def test_env_values_are_validated_after_substitution() -> None:
    lines = error_lines(cluster("poll_interval: ${POLL:-x}\n"))
    assert len(lines) == 1
    assert lines[0].startswith("proxmox[0].poll_interval: invalid duration 'x'")


def test_process_environment_is_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXPROXY_TEST_SECRET", "env-secret")
    config = parse_config(MINIMAL.replace("token-secret-value", "${PXPROXY_TEST_SECRET}"))
    secret = config.proxmox[0].secret
    assert secret is not None
    assert secret.get_secret_value() == "env-secret"


# ------------------------------------------------------------------- secrets


def test_secrets_never_print() -> None:
    config = parse(
        """
        proxmox:
          - url: https://pve:8006
            token_id: pxproxy@pve!daemon
            secret: SECRET-pve-token
            username: root@pam
            password: SECRET-pve-password
        api:
          tokens:
            - {name: ops, secret: SECRET-api-token-123}
        """
    )
    for text in (
        repr(config),
        str(config),
        config.model_dump_json(),
        repr(config.proxmox[0]),
        str(config.api.tokens[0]),
        repr(config.model_dump()),
    ):
        assert "SECRET" not in text
    # The values are still there for the code that needs them.
    assert config.api.tokens[0].secret.get_secret_value() == "SECRET-api-token-123"


def test_secret_from_env_not_in_validation_errors() -> None:
    message = error_of(
        cluster("password: ${PW}\n"), env={"PW": "SECRET-in-error"}
    )  # password without username
    assert "proxmox[0]: username and password go together" in message
    assert "SECRET" not in message


# ------------------------------------------------------------------- YAML and files


@pytest.mark.parametrize("text", ["proxmox: [", "proxmox:\n  - url: a\n bad: indent\n", "a: *x"])
def test_invalid_yaml(text: str) -> None:
    message = error_of(text)
    assert message.startswith("<config>: not valid YAML")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert "the top level must be a mapping" in error_of(text)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in str(info.value)
    assert "cannot read the configuration" in str(info.value)


def test_load_config_reads_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(MINIMAL, encoding="utf-8")
    assert load_config(str(good)).proxmox[0].token_id == "pxproxy@pve!daemon"
    bad = tmp_path / "bad.yml"
    bad.write_text(cluster("tsl: {}\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert str(info.value).startswith(f"{bad}: invalid configuration")
    assert "proxmox[0].tsl: unknown key; did you mean tls?" in str(info.value)


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PXPROXY_CONFIG", raising=False)
    assert config_path(None) == Path("pxproxy.yml")
    monkeypatch.setenv("PXPROXY_CONFIG", "/etc/pxproxy.yml")
    assert config_path(None) == Path("/etc/pxproxy.yml")
    assert config_path("given.yml") == Path("given.yml")


# ------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8081", ("127.0.0.1", 8081)), ("[::1]:9", ("::1", 9)), (":80", ("0.0.0.0", 80))],
)
def test_split_address(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("pve", False)],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


# ------------------------------------------------------------------- command line


@pytest.mark.parametrize("command", ["check", "run"])
def test_cli_malformed_config_exits_1_naming_key_path(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pxproxy.yml"
    path.write_text(cluster("tls: {fingerprint: 'xyz'}\n"), encoding="utf-8")
    assert main([command, "-c", str(path)]) == 1
    captured = capsys.readouterr()
    assert "proxmox[0].tls.fingerprint" in captured.err
    assert captured.err.startswith("pxproxy: ")
    assert captured.out == ""


def test_cli_missing_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.yml"
    assert main(["check", "-c", str(path)]) == 1
    assert str(path) in capsys.readouterr().err


def test_cli_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.yml"
    path.write_text(MINIMAL + "routes:\n  - {host: a.b, guest: a, port: 0}\n", encoding="utf-8")
    monkeypatch.setenv("PXPROXY_CONFIG", str(path))
    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err
    assert "routes[0].port" in err


def test_listener_limits_defaults_and_durations() -> None:
    config = parse(MINIMAL + "api: {header_timeout: 5s, keepalive_timeout: 1m}\n")
    api, proxy = config.api, config.proxy
    assert (api.header_timeout, api.keepalive_timeout) == (5.0, 60.0)
    assert (api.max_header_size, api.max_headers, api.max_connections_per_client) == (
        16384,
        100,
        64,
    )
    assert (proxy.max_header_size, proxy.max_headers) == (16384, 100)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("api: {max_header_size: 100}", "api.max_header_size"),
        ("api: {max_headers: 0}", "api.max_headers"),
        ("api: {header_timeout: 0s}", "api.header_timeout"),
        ("api: {keepalive_timeout: 2h}", "api.keepalive_timeout"),
        ("api: {max_connections_per_client: 0}", "api.max_connections_per_client"),
        ("proxy: {max_headers: 5000}", "proxy.max_headers"),
        ("proxy: {workers: 0}", "proxy.workers"),
        ("proxy: {workers: 65}", "proxy.workers"),
        ("proxy: {workers: two}", "proxy.workers"),
    ],
)
def test_listener_limits_out_of_range_name_their_key(extra: str, key: str) -> None:
    lines = error_lines(MINIMAL + extra + "\n")
    assert len(lines) == 1
    assert lines[0].startswith(f"{key}: ")
