"""`pxproxy stats | journal | exec` run as processes against a fake API that follows the
streaming contract of DESIGN.md: output, exit codes, the token sent, Ctrl-C, refs resolved
through /api/v1/guests before the node/vmid endpoint is called."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from .process import cli, environment, read_line, spawn

TOKEN = "cli-test-token-0123"
STATS_LINE = "running|31.1%|9.6GiB/20GiB|48.87%|4.7GiB/3.3GiB|25GiB/36GiB"
PROBLEM = "application/problem+json"
GUEST_101 = {"cluster": "home", "node": "pve1", "vmid": 101, "type": "lxc", "name": "wiki"}
# The refs the fake resolves to guest 101; "web" is ambiguous, anything else is unknown.
REFS_101 = ("101", "wiki", "pve1/101", "home:101")


@dataclass
class FakeApi:
    """Records what the CLI asked; `release` lets a test pace the exec output."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    exec_text: bool = False  # answer exec in text, as a daemon without NDJSON would


def problem(status: int, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": "x", "status": status, "detail": detail}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


def build_app(api: FakeApi) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        api.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": [(k, v) for k, v in request.query.items()],
                "auth": request.headers.get("Authorization"),
            }
        )
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return problem(401, "send Authorization: Bearer <secret> of a token from api.tokens")
        return await handler(request)

    async def stats(request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        if ref == "missing":
            return problem(404, f"no guest matches ref {ref!r}")
        if ref == "broken":
            return web.Response(status=500, text="<html>oops</html>", content_type="text/html")
        as_json = request.query.get("format") == "json"
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson" if as_json else "text/plain"}
        )
        await resp.prepare(request)
        n = 0
        while True:
            n += 1
            if as_json:
                line = json.dumps({"status": "running", "cpu": 0.311, "n": n})
            else:
                line = STATS_LINE
            await resp.write(line.encode() + b"\n")
            if request.query.get("stream") == "0":
                break
            await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def journal(request: web.Request) -> web.StreamResponse:
        where = request.match_info["node"] + "/" + request.match_info.get("vmid", "-")
        limit = int(request.query.get("limit", "3"))
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(limit):
            await resp.write(f"{where} old {i}\n".encode())
        if request.query.get("follow") != "0":
            n = 0
            while True:
                n += 1
                await resp.write(f"{where} new {n}\n".encode())
                await asyncio.sleep(0.05)
        await resp.write_eof()
        return resp

    async def exec_(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        api.requests[-1]["body"] = body
        argv: list[str] = body["argv"]
        as_json = request.query.get("format") == "json" and not api.exec_text
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson" if as_json else "text/plain"}
        )
        await resp.prepare(request)

        async def out(text: str) -> None:
            # NDJSON carries raw output chunks: {"output": "..."} with their own newlines.
            data = json.dumps({"output": text + "\n"}) + "\n" if as_json else text + "\n"
            await resp.write(data.encode())

        status: int | None = 0
        if argv[0] == "echo":
            await out(" ".join(argv[1:]))
        elif argv[0] == "fail":
            await out("failing")
            status = int(argv[1])
        elif argv[0] == "paced":
            await out("first")
            await asyncio.wait_for(api.release.wait(), 20)
            await out("second")
        elif argv[0] == "marker":
            await out("[exit status 7]")  # output that looks like the status line
            await out("done")
        elif argv[0] == "cut":
            await out("partial")
            status = None
        elif argv[0] == "hang":
            await out("partial")
            if as_json:
                await resp.write(b'{"error": "timed out after 1s", "duration_s": 1.0}\n')
            status = None
        if status is not None:
            end = json.dumps({"exit_status": status}) if as_json else f"[exit status {status}]"
            await resp.write(end.encode() + b"\n")
        await resp.write_eof()
        return resp

    async def guest(request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if ref in REFS_101:
            return web.json_response(GUEST_101)
        if ref == "web":
            body = {
                "type": "about:blank",
                "title": "Ambiguous",
                "status": 409,
                "detail": "2 guests match ref 'web'; use cluster:vmid or node/vmid",
                "candidates": [
                    {
                        "ref": "home:103",
                        "node": "pve1",
                        "vmid": 103,
                        "name": "web",
                        "status": "running",
                    },
                    {
                        "ref": "home:104",
                        "node": "pve2",
                        "vmid": 104,
                        "name": "web",
                        "status": "stopped",
                    },
                ],
            }
            return web.Response(status=409, text=json.dumps(body), content_type=PROBLEM)
        return problem(404, f"no guest matches ref {ref!r}")

    async def nodes(request: web.Request) -> web.Response:
        return web.json_response([{"cluster": "home", "name": "pve1", "aliases": ["hv1"]}])

    app = web.Application(middlewares=[record])
    app.router.add_get("/api/v1/guests/{ref:.+}", guest)
    app.router.add_get("/api/v1/nodes", nodes)
    app.router.add_get("/stats/{ref:.+}", stats)
    app.router.add_get("/journal/{node}", journal)
    app.router.add_get("/journal/{node}/{vmid}", journal)
    app.router.add_post("/exec/{node}/{vmid}", exec_)
    return app


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    runner = web.AppRunner(build_app(fake), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def client(api: FakeApi) -> tuple[str, ...]:
    return ("--api", api.url, "--token", TOKEN)


# -- stats --------------------------------------------------------------------------------------


async def test_stats_once_prints_a_table_and_sends_the_token(api: FakeApi) -> None:
    result = await cli("stats", "pve1/101", "--once", *client(api))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 2
    assert [c.strip() for c in lines[0].split("  ") if c.strip()] == [
        "STATUS",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
    ]
    assert [c.strip() for c in lines[1].split("  ") if c.strip()] == [
        "running",
        "31.1%",
        "9.6GiB / 20GiB",
        "48.87%",
        "4.7GiB / 3.3GiB",
        "25GiB / 36GiB",
    ]
    # Columns line up with the header.
    assert lines[0].index("MEM USAGE") == lines[1].index("9.6GiB")
    (req,) = api.requests
    assert req["path"] == "/stats/pve1/101"
    assert req["query"] == [("stream", "0")]
    assert req["auth"] == f"Bearer {TOKEN}"


async def test_stats_json_passes_ndjson_and_env_defaults(api: FakeApi) -> None:
    env = environment(PXPROXY_API=api.url, PXPROXY_TOKEN=TOKEN)
    result = await cli("stats", "wiki", "--once", "--json", env=env)
    assert result.code == 0, result.err
    assert [json.loads(line) for line in result.out.splitlines()] == [
        {"status": "running", "cpu": 0.311, "n": 1}
    ]
    assert api.requests[0]["query"] == [("stream", "0"), ("format", "json")]
    assert api.requests[0]["auth"] == f"Bearer {TOKEN}"


async def test_stats_follows_until_ctrl_c(api: FakeApi) -> None:
    proc = await spawn("stats", "101", *client(api))
    assert (await read_line(proc)).startswith("STATUS")
    for _ in range(3):  # lines keep coming while the stream is open
        assert (await read_line(proc)).startswith("running")
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    assert api.requests[0]["query"] == []


# -- journal ------------------------------------------------------------------------------------


async def test_journal_history_without_follow(api: FakeApi) -> None:
    result = await cli(
        "journal", "pve1", "-n", "2", "-u", "ssh.service", "-u", "cron", "--no-follow", *client(api)
    )
    assert result.code == 0, result.err
    assert result.out == "pve1/- old 0\npve1/- old 1\n"
    # No guest is called pve1, a node is: the node's journal.
    assert [r["path"] for r in api.requests] == [
        "/api/v1/guests/pve1",
        "/api/v1/nodes",
        "/journal/pve1",
    ]
    assert api.requests[-1]["query"] == [
        ("service", "ssh.service"),
        ("service", "cron"),
        ("limit", "2"),
        ("follow", "0"),
    ]


async def test_journal_of_a_guest_follows_until_ctrl_c(api: FakeApi) -> None:
    proc = await spawn("journal", "pve1", "101", "-n", "1", *client(api))
    assert await read_line(proc) == "pve1/101 old 0\n"
    assert await read_line(proc) == "pve1/101 new 1\n"
    assert await read_line(proc) == "pve1/101 new 2\n"
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    assert [r["path"] for r in api.requests] == ["/api/v1/guests/pve1/101", "/journal/pve1/101"]


# -- exec ---------------------------------------------------------------------------------------


async def test_exec_output_and_status_zero(api: FakeApi) -> None:
    result = await cli("exec", "pve1", "101", *client(api), "--", "echo", "a; b", "$(c)")
    assert (result.code, result.out, result.err) == (0, "a; b $(c)\n", "")
    lookup, req = api.requests
    assert lookup["path"] == "/api/v1/guests/pve1/101"
    assert (req["method"], req["path"]) == ("POST", "/exec/pve1/101")
    assert req["query"] == [("format", "json")]
    assert req["body"] == {"argv": ["echo", "a; b", "$(c)"]}
    assert req["auth"] == f"Bearer {TOKEN}"


async def test_exec_passes_the_exit_status_through(api: FakeApi) -> None:
    result = await cli("exec", "pve1", "101", *client(api), "--", "fail", "3")
    assert (result.code, result.out) == (3, "failing\n")
    # Arguments that look like our own options belong to the command.
    result = await cli("exec", "pve1", "101", *client(api), "--", "echo", "--api", "-n")
    assert (result.code, result.out) == (0, "--api -n\n")
    result = await cli("exec", "pve1", "101", *client(api), "--", "echo", "a", "--", "b")
    assert (result.code, result.out) == (0, "a -- b\n")
    # Without our options before "--", everything after the vmid is the command's.
    env = environment(PXPROXY_API=api.url, PXPROXY_TOKEN=TOKEN)
    result = await cli("exec", "pve1", "101", "echo", "x", "--", "--token", env=env)
    assert (result.code, result.out) == (0, "x -- --token\n")


async def test_exec_streams_output_as_it_arrives(api: FakeApi) -> None:
    proc = await spawn("exec", "pve1", "101", *client(api), "--", "paced")
    # "second" is only sent after the test has seen "first".
    assert await read_line(proc) == "first\n"
    api.release.set()
    assert await read_line(proc) == "second\n"
    await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 0


async def test_exec_text_answer_uses_the_final_status_line(api: FakeApi) -> None:
    api.exec_text = True
    result = await cli("exec", "pve1", "101", *client(api), "--", "marker")
    assert (result.code, result.out) == (0, "[exit status 7]\ndone\n")
    result = await cli("exec", "pve1", "101", *client(api), "--", "fail", "42")
    assert (result.code, result.out) == (42, "failing\n")


async def test_exec_without_exit_status_is_an_error(api: FakeApi) -> None:
    result = await cli("exec", "pve1", "101", *client(api), "--", "cut")
    assert result.code == 1
    assert result.out == "partial\n"
    assert "ended without the command's exit status" in result.err


async def test_exec_error_event_is_reported(api: FakeApi) -> None:
    result = await cli("exec", "pve1", "101", *client(api), "--", "hang")
    assert result.code == 1
    assert result.out == "partial\n"
    assert result.err.strip() == "pxproxy exec: timed out after 1s"


async def test_exec_needs_a_command(api: FakeApi) -> None:
    result = await cli("exec", "pve1", "101", *client(api), "--")
    assert result.code == 2
    assert "give the command after --" in result.err
    assert api.requests == []


# -- refs ---------------------------------------------------------------------------------------


async def test_every_ref_style_reaches_the_node_vmid_endpoint(api: FakeApi) -> None:
    for ref in REFS_101:
        api.requests.clear()
        result = await cli("exec", ref, *client(api), "--", "echo", "hi")
        assert (result.code, result.out) == (0, "hi\n"), (ref, result.err)
        assert [r["path"] for r in api.requests] == [f"/api/v1/guests/{ref}", "/exec/pve1/101"]


async def test_journal_and_tail_of_a_guest_by_name(api: FakeApi) -> None:
    result = await cli("journal", "wiki", "-n", "1", "--no-follow", *client(api))
    assert (result.code, result.out) == (0, "pve1/101 old 0\n"), result.err
    assert api.requests[-1]["path"] == "/journal/pve1/101"


async def test_a_node_alias_and_a_forced_node(api: FakeApi) -> None:
    result = await cli("journal", "hv1", "-n", "1", "--no-follow", *client(api))
    assert (result.code, result.out) == (0, "hv1/- old 0\n"), result.err
    # --node skips the guest lookup: for a node that shares its name with a guest.
    api.requests.clear()
    result = await cli("journal", "--node", "wiki", "-n", "1", "--no-follow", *client(api))
    assert result.code == 0, result.err
    assert [r["path"] for r in api.requests] == ["/journal/wiki"]


async def test_no_guest_and_no_node_says_so(api: FakeApi) -> None:
    result = await cli("journal", "nothing", "--no-follow", *client(api))
    assert result.code == 1
    assert result.err.strip() == "pxproxy journal: no guest or node matches 'nothing'"
    # A vmid or node/vmid is never taken for a node: the API's own 404 is printed.
    result = await cli("journal", "pve9/101", "--no-follow", *client(api))
    assert result.code == 1
    assert "no guest matches ref 'pve9/101'" in result.err
    assert api.requests[-1]["path"] == "/api/v1/guests/pve9/101"


async def test_an_ambiguous_ref_lists_the_candidates_and_exits_1(api: FakeApi) -> None:
    result = await cli("exec", "web", *client(api), "--", "true")
    assert result.code == 1
    lines = result.err.splitlines()
    assert lines[0] == (
        "pxproxy exec: 409 Conflict: 2 guests match ref 'web'; use cluster:vmid or node/vmid"
    )
    assert [line.split()[0] for line in lines[1:]] == ["home:103", "home:104"]
    assert "node pve2, stopped" in lines[2]
    assert not any(r["path"].startswith("/exec") for r in api.requests)


# -- errors -------------------------------------------------------------------------------------


async def test_api_errors_print_the_detail_and_exit_1(api: FakeApi) -> None:
    result = await cli("stats", "missing", "--once", *client(api))
    assert result.code == 1
    assert result.err.strip() == "pxproxy stats: 404 Not Found: no guest matches ref 'missing'"
    assert result.out == ""

    result = await cli("stats", "broken", "--once", *client(api))
    assert result.code == 1
    assert "500 Internal Server Error: <html>oops</html>" in result.err

    result = await cli("journal", "pve1", "--no-follow", "--api", api.url)
    assert result.code == 1
    assert "401 Unauthorized: send Authorization" in result.err
    assert "(set --token or $PXPROXY_TOKEN)" in result.err
    assert api.requests[-1]["auth"] is None


async def test_unreachable_api_exits_2() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for command, *rest in (
        ("stats", "101"),
        ("journal", "pve1"),
        ("exec", "pve1", "101", "--", "true"),
        ("exec", "wiki", "--", "true"),
        ("ls",),
        ("wake", "wiki"),
    ):
        result = await cli(command, "--api", url, *rest)
        assert result.code == 2, command
        assert f"cannot reach the pxproxy API at {url}: Connection refused" in result.err
        assert "Traceback" not in result.err
