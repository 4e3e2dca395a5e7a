from __future__ import annotations

from pathlib import Path

import pytest

from pxproxy.lab.certs import LabCertificate

from .helpers import MINIMAL, parse, problems_of, with_routes

FINGERPRINT = "ab" * 32

# ------------------------------------------------------------------- duplicate hosts


def test_hosts_differing_in_case_and_trailing_dot() -> None:
    lines = problems_of(
        with_routes(
            """
            - {host: wiki.example.com, guest: wiki, port: 80}
            - {host: [docs.example.com, "Wiki.Example.COM."], guest: other, port: 80}
            """
        )
    )
    assert lines == [
        "routes[1].host[1]: 'Wiki.Example.COM.' is already routes[0].host ('wiki.example.com' "
        "-> wiki): hosts match without regard to case or a trailing dot and the first route "
        "keeps a host, so this route would never get a request for it"
    ]


def test_duplicate_wildcards_and_a_host_listed_twice() -> None:
    lines = problems_of(
        with_routes(
            """
            - {host: ["*.example.com", a.example.com, A.example.com], guest: a, port: 80}
            - {host: "*.EXAMPLE.com", guest: a, port: 8080}
            """
        )
    )
    assert [line.split(": ", 1)[0] for line in lines] == ["routes[0].host[2]", "routes[1].host"]
    assert "listed twice in this route" in lines[0]
    assert "is already routes[0].host[0]" in lines[1]


def test_a_wildcard_and_an_exact_host_are_different_hosts() -> None:
    config = parse(
        with_routes(
            """
            - {host: "*.example.com", guest: a, port: 80}
            - {host: "example.com", guest: b, port: 80}
            - {host: "b.example.com", guest: b, port: 80}
            """
        )
    )
    assert len(config.routes) == 3


# ------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("key", "meaning"),
    [
        ("timeout", "stop the guest right after every request"),
        ("wake_timeout", "fail every wake"),
        ("shutdown_timeout", "hard stop"),
    ],
)
def test_zero_idle_durations(key: str, meaning: str) -> None:
    lines = problems_of(
        with_routes(f"- {{host: a.example.com, guest: a, port: 80, idle: {{{key}: 0s}}}}")
    )
    assert len(lines) == 1
    assert lines[0].startswith(f"routes[0].idle.{key}: must be more than 0s: 0 would ")
    assert meaning in lines[0]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("proxy: {connect_timeout: 0}", "proxy.connect_timeout"),
        ("proxy: {read_timeout: 0ms}", "proxy.read_timeout"),
        ("proxy: {header_timeout: 0}", "proxy.header_timeout"),
    ],
)
def test_zero_proxy_timeouts(text: str, key: str) -> None:
    (line,) = problems_of(MINIMAL + text + "\n")
    assert line.startswith(f"{key}: must be more than 0s")


def test_zero_backoff_and_tiny_poll_interval() -> None:
    lines = problems_of(MINIMAL + "    backoff_max: 0\n    poll_interval: 0\n")
    assert lines == [
        "proxmox[0].backoff_max: must be more than 0s: 0 would retry a failing cluster "
        "without any pause",
        "proxmox[0].poll_interval: must be at least 50ms",
    ]


def test_negative_durations_are_refused_by_the_parser() -> None:
    (line,) = problems_of(with_routes("- {host: a.b, guest: a, port: 80, idle: {timeout: -5}}"))
    assert line.startswith("routes[0].idle.timeout: invalid duration -5 (durations cannot be")


def test_zero_is_fine_where_it_means_no_wait() -> None:
    config = parse(
        with_routes(
            "- {host: a.b, guest: a, port: 80, idle: {retry_after: 0}}",
            extra="shutdown_grace: 0\nproxy: {keepalive_timeout: 0}\n",
        )
    )
    assert config.shutdown_grace == 0
    assert config.routes[0].idle is not None
    assert config.routes[0].idle.retry_after == 0


# ------------------------------------------------------------------- TLS


def test_verify_false_with_a_fingerprint() -> None:
    lines = problems_of(MINIMAL + f"    tls: {{verify: false, fingerprint: '{FINGERPRINT}'}}\n")
    assert lines == [
        "proxmox[0].tls.verify: false contradicts proxmox[0].tls.fingerprint: a pinned "
        "fingerprint is always checked, so verify: false would not turn checking off; remove "
        "verify: false to pin, or the fingerprint to accept any certificate"
    ]


def test_verify_false_with_a_ca_file_and_a_fingerprint_with_a_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    lines = problems_of(
        """
        proxmox:
          - {name: a, url: "https://a:8006", token_id: a@pve!t, secret: s,
             tls: {verify: false, ca_file: CA}}
          - {name: b, url: "https://b:8006", token_id: a@pve!t, secret: s,
             tls: {fingerprint: FP, ca_file: CA}}
        """.replace("CA", str(ca)).replace("FP", FINGERPRINT)
    )
    assert [line.split(": ", 1)[0] for line in lines] == [
        "proxmox[0].tls.verify",
        "proxmox[1].tls.ca_file",
    ]
    assert "contradicts proxmox[0].tls.ca_file" in lines[0]
    assert "is not used with proxmox[1].tls.fingerprint" in lines[1]


def test_ca_file_that_cannot_be_used(tmp_path: Path, lab_certificate: LabCertificate) -> None:
    missing, junk, good = tmp_path / "missing.pem", tmp_path / "junk.pem", tmp_path / "ca.pem"
    junk.write_text("not a certificate\n", encoding="utf-8")
    good.write_bytes(lab_certificate.cert_pem)
    text = MINIMAL + "    tls: {ca_file: 'PATH'}\n"
    (line,) = problems_of(text.replace("PATH", str(missing)))
    assert line == f"proxmox[0].tls.ca_file: cannot read {missing}: No such file or directory"
    (line,) = problems_of(text.replace("PATH", str(junk)))
    assert line.startswith(f"proxmox[0].tls.ca_file: {junk} holds no usable PEM certificate")
    assert parse(text.replace("PATH", str(good))).proxmox[0].tls.ca_file == str(good)


# ------------------------------------------------------------------- on partial data


def test_semantic_checks_run_beside_structural_errors() -> None:
    # Broken clusters, a broken token and a broken route: the other routes are still checked.
    lines = problems_of(
        """
        proxmox:
          - {url: pve, token_id: nope}
        api: {tokens: [{name: "bad name", secret: x}]}
        routes:
          - {host: a.example.com, guest: a, port: 0, idle: {depends_on: [b]}}
          - {host: A.example.com, guest: b, port: 80, idle: {depends_on: [a], timeout: 0}}
        """
    )
    paths = [line.split(": ", 1)[0] for line in lines]
    assert paths == [
        "proxmox[0].url",
        "proxmox[0].token_id",
        "api.tokens[0].name",
        "api.tokens[0].secret",
        "routes[0].port",
        "routes[0].idle.depends_on[0]",
        "routes[1].host",
        "routes[1].idle.timeout",
    ]
