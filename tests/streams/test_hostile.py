"""A hostile-input corpus against /exec, /journal and /tail. Every case is either rejected with
400 before anything reaches the lab (no shell opened, no command run), or run ONLY as a
literal argument: the lab shell's record shows the argv exactly as given and nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from pxproxy.lab.certs import LabCertificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from ..support import HOST
from .test_guest_streams import LXC, NODE, Stack, add_guests, api_stack, auth

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONTROLS = [
    "\x00", "\x01", "\x03", "\x04", "\x07", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x15",
    "\x1a", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9b", "\x9f", "\u2028", "\u2029",
    "\u202e", "\u2066", "\ud800",
]  # fmt: skip
TEMPLATES = ["echo hi{c}id", "{c}", "$(id){c}", "x{c}[31m"]
ESCAPES = ["\x1b[2J", "\x1b]0;pwned\x07", "\x1b[200~id\x1b[201~", "\x1bc", "\x9b31m", "\x1b[A\r"]

REJECTED_EXEC: list[Any] = (
    [["printf", t.format(c=c)] for c in CONTROLS for t in TEMPLATES]
    + [[t.format(c=c)] for c in CONTROLS[:12] for t in TEMPLATES[:2]]
    + [["echo", e] for e in ESCAPES]
    + [
        "echo hi",
        {"cmd": "id"},
        [],
        [1, 2],
        ["echo", None],
        ["-rf"],
        ["--", "id"],
        [""],
        ["  "],
        ["echo", "x" * 9000],
        ["echo"] * 300,
        ["echo", "a" * 4000, "b" * 4200],
    ]
)
REJECTED_BODIES: list[Any] = [
    {"argv": ["true"], "timeout": -1},
    {"argv": ["true"], "timeout": 0},
    {"argv": ["true"], "timeout": 1e12},
    {"argv": ["true"], "timeout": True},
    {"argv": ["true"], "timeout": "5; id"},
    {"argv": ["true"], "shell": True},
    {"argv": ["true"], "argv0": "sh"},
    ["true"],
    "true",
    None,
]
REJECTED_QUERIES = (
    [f"/journal/{NODE}/{LXC}?limit={quote(v)}" for v in (
        "0", "1001", "-1", "1e3", "0x10", "+5", " 5", "١٠", "1000000", "", "10;id", "10\n",
        "1 0", "5&service=x",
    )]
    + [f"/journal/{NODE}/{LXC}?service={quote(v)}" for v in (
        "nginx;id", "-f", "--follow", "$(id)", "a b", "nginx\n", "../x", "a|b", "`id`",
        "x" * 300, "-u", "--output=json", "nginx\x1b[2J", "a\u2028b", "",
    )]
    + [f"/journal/{NODE}/{LXC}?follow={quote(v)}" for v in ("2", "yes please", "1;id")]
    + [f"/journal/{NODE}/{LXC}?{q}" for q in ("unit=x", "limit=1&limit=2", "lines=5", "cmd=id")]
    + [f"{base}?file={quote(v)}" for base in (f"/tail/{NODE}/{LXC}", f"/tail/{NODE}") for v in (
        "../etc/passwd", "var/log/syslog", "/var/log/../../etc/shadow", "/var/./log/syslog",
        "//etc/passwd", "/var/log/", "-n 1000000", "--follow=name", "-F", "--",
        "/var/log/syslog\n/etc/shadow", "/var/log/sys\x1blog", "/var/log/\u2028x",
        "/tmp/zero\u200bwidth", "/tmp/nbsp\u00a0", "", "~/.ssh/id_rsa", "$(id)", "/" + "a" * 5000,
        "/var/log/x\r", "/var/log/\x00x",
    )]
    + [f"/tail/{NODE}/{LXC}?file=/var/log/syslog&limit={quote(v)}" for v in ("0", "99999", "-5")]
    + [f"/tail/{NODE}/{LXC}", f"/tail/{NODE}/{LXC}?file=/a&follow=maybe"]
    + [f"/tail/{NODE}/{LXC}?" + "&".join(f"file=/f{i}" for i in range(20))]
)  # fmt: skip

LITERAL_ARGS = [
    "; id", "&& id", "|| id", "| id", "& id", "`id`", "$(id)", "${IFS}id", "$IFS", "${PATH}",
    "${!x}", "$'\\x41'", "$((1+1))", "$?", "$$", "$0", "'", '"', "\\", "'; id; '", '"; id; "',
    "a'b\"c`d$e\\f", "$(rm -rf /)", "`rm -rf /`", "*", "?", "[a]", "{a,b}", "~", "~root",
    "~/.ssh", "*.log", "/etc/*", "!!", "!-1", "-n", "-e", "-E", "--", "--help", "-- -n",
    ">/tmp/x", "</etc/passwd", "2>&1", ">(id)", "<(id)", "x=$(id)", "A=1 id", "exec id",
    "eval id", "id #", "#comment", ";;", "((", "))", "{", "}", "\\$HOME", "'$HOME'",
    '"$HOME"', "../../etc/passwd", "-o json", "--follow=name", "-n 1000000", "%s%s%n",
    "%d", "\\n", "\\x1b[2J", "\\033c", "\\r", "PXE_0000_0", "PXS_0000", "[exit status 0]",
    "\uff1b id", "\u037e id", "\uff49\uff44", "\u2215etc\u2215passwd", "caf\u00e9",
    "\u65e5\u672c\u8a9e", "emoji \U0001f600", "\u00a0nbsp", "zero\u200bwidth", "\ufeffbom",
    "  leading", "trailing  ", "a  b", "", " ", "x" * 2000,
]  # fmt: skip
LITERAL_COMMANDS = [["id;id"], ["$(id)"], ["`id`"], ["/bin/sh -c id"], ["echo;id", "x"]]
LITERAL_FILES = [
    "/var/log/--follow=name", "/var/log/-n 1000000", "/var/log/a;id", "/var/log/$(id)",
    "/var/log/`id`", "/var/log/a b", "/var/log/*", "/var/log/'x'", "/var/log/~",
    "/var/log/\uff0e\uff0e/etc/passwd",
]  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(lab_certificate: LabCertificate) -> AsyncIterator[Stack]:
    cluster = LabCluster()
    cluster.add_node(NODE)
    lab = LabServer(cluster, host=HOST, port=0, certificate=lab_certificate)
    await lab.start()
    add_guests(lab)
    try:
        async with api_stack(lab) as stack:
            yield stack
    finally:
        await lab.stop()


def new_records(stack: Stack, since: int) -> list[tuple[str, tuple[str, ...]]]:
    return [(r.scope, r.argv) for r in stack.lab.shell_commands[since:]]


def expect_only(records: list[tuple[str, tuple[str, ...]]], inner: tuple[str, ...]) -> None:
    """Exactly: start marker, pct exec with the argv, the argv in the guest, end marker."""
    assert len(records) == 4, records
    (s0, start), (s1, pct), (s2, ran), (s3, end) = records
    assert (s0, start[0], start[2]) == ("node", "printf", "PXS")
    assert (s1, pct) == ("node", ("pct", "exec", str(LXC), "--", *inner))
    assert (s2, ran) == (f"guest:{LXC}", inner)
    assert (s3, end[0], end[2]) == ("node", "printf", "PXE")


async def assert_rejected(stack: Stack, resp: Any) -> None:
    assert resp.status in (400, 413), await resp.text()
    if resp.status == 400:
        problem = await resp.json(content_type=None)
        assert problem["detail"]


@pytest.mark.parametrize("argv", REJECTED_EXEC)
async def test_rejected_argv(hostile: Stack, argv: Any) -> None:
    before = hostile.mark()
    resp = await hostile.http.post(f"/exec/{NODE}/{LXC}", json={"argv": argv}, headers=auth())
    await assert_rejected(hostile, resp)
    assert hostile.mark() == before
    assert hostile.audit.records[-1].result.startswith("rejected: ")


@pytest.mark.parametrize("char", CONTROLS)
async def test_rejection_names_the_character(hostile: Stack, char: str) -> None:
    resp = await hostile.http.post(
        f"/exec/{NODE}/{LXC}", json={"argv": ["echo", "ab" + char]}, headers=auth()
    )
    detail = (await resp.json(content_type=None))["detail"]
    assert detail.startswith(f"argv[1] contains U+{ord(char):04X} ")
    assert detail.endswith(" at position 2")


@pytest.mark.parametrize("body", REJECTED_BODIES)
async def test_rejected_body(hostile: Stack, body: Any) -> None:
    before = hostile.mark()
    resp = await hostile.http.post(f"/exec/{NODE}/{LXC}", json=body, headers=auth())
    await assert_rejected(hostile, resp)
    assert hostile.mark() == before


@pytest.mark.parametrize(
    "raw", [b"{", b"\xff\xfe", b"", b'{"argv": ["a"]}' + b" " * 20000, b"x" * 70000]
)
async def test_rejected_raw_body(hostile: Stack, raw: bytes) -> None:
    before = hostile.mark()
    resp = await hostile.http.post(
        f"/exec/{NODE}/{LXC}", data=raw, headers={**auth(), "Content-Type": "application/json"}
    )
    await assert_rejected(hostile, resp)
    assert hostile.mark() == before


@pytest.mark.parametrize("path", REJECTED_QUERIES)
async def test_rejected_query(hostile: Stack, path: str) -> None:
    before = hostile.mark()
    resp = await hostile.http.get(path, headers=auth())
    await assert_rejected(hostile, resp)
    assert hostile.mark() == before


@pytest.mark.parametrize("arg", LITERAL_ARGS)
async def test_literal_argument(hostile: Stack, arg: str) -> None:
    since = len(hostile.lab.shell_commands)
    argv = ["printf", "%s\\n", arg]
    resp = await hostile.http.post(f"/exec/{NODE}/{LXC}", json={"argv": argv}, headers=auth())
    body = await resp.text()
    assert resp.status == 200, body
    assert body == arg + "\n[exit status 0]\n"
    expect_only(new_records(hostile, since), tuple(argv))


@pytest.mark.parametrize("argv", LITERAL_COMMANDS)
async def test_literal_command_name(hostile: Stack, argv: list[str]) -> None:
    since = len(hostile.lab.shell_commands)
    resp = await hostile.http.post(
        f"/exec/{NODE}/{LXC}?format=json", json={"argv": argv}, headers=auth()
    )
    assert resp.status == 200
    last = json.loads((await resp.text()).splitlines()[-1])
    assert last["exit_status"] == 255  # no such program: nothing else ran
    expect_only(new_records(hostile, since), tuple(argv))


@pytest.mark.parametrize("path", LITERAL_FILES)
async def test_literal_file(hostile: Stack, path: str) -> None:
    since = len(hostile.lab.shell_commands)
    resp = await hostile.http.get(
        f"/tail/{NODE}/{LXC}?follow=0&limit=3&file={quote(path)}", headers=auth()
    )
    body = await resp.text()
    assert resp.status == 200
    assert f"tail: cannot open '{path}' for reading: No such file or directory" in body
    expect_only(new_records(hostile, since), ("tail", "-n", "3", "--", path))


async def test_the_corpus_is_large_enough() -> None:
    total = (
        len(REJECTED_EXEC) + len(CONTROLS) + len(REJECTED_BODIES) + 5 + len(REJECTED_QUERIES)
        + len(LITERAL_ARGS) + len(LITERAL_COMMANDS) + len(LITERAL_FILES)
    )  # fmt: skip
    assert total >= 200
