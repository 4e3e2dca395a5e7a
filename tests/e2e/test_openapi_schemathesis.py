"""Schemathesis against the live management API of a daemon on the lab, with a token of every
scope: no 5xx, and every answer conforms to /api/v1/openapi.json (status code, content type,
schema).

Bounded so that nothing can hang: follow streams (journals, tails) get `follow=0` and stats
`stream=0`, as a client that wants an answer rather than a feed asks; `GET /api/v1/events`,
which never ends by design, is read by schemathesis up to MAX_STREAM_EVENTS events and each
event checked against the document; every call has a timeout. Path parameters are mostly a
lab guest's or node's (exec bodies often a command the lab knows), so power actions, wakes and
exec reach real guests, not only 404s; the fixture checks some did.

The daemon and the lab run in a thread of their own with their own event loop: schemathesis
calls the API synchronously (requests).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
import yaml
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pxproxy.api import models as m
from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.certs import LabCertificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from ..support import HOST, lab_cluster

# vmids 7321-7339 are this test's (the lab derives guest addresses from vmids).
WEB, SLEEPY, VM, PAUSED = 7321, 7322, 7323, 7324
TOKEN = "schemathesis-token-of-all-scopes"
CALL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 30.0
# GET /api/v1/events never ends by design: schemathesis reads an event stream up to this
# many events (hello, then a poll and a stats event every 200 ms poll), then cuts it short.
MAX_STREAM_EVENTS = 4
BOUNDS = {"follow": "0", "stream": "0"}


class LiveApi:
    """Lab and daemon in a thread with their own loop, until stop()."""

    def __init__(self, config_path: Path, certificate: LabCertificate) -> None:
        self._config_path = config_path
        self._certificate = certificate
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            pytest.fail(f"lab and daemon not up within {START_TIMEOUT_S}s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive(), "the daemon did not stop"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        cluster = LabCluster()
        cluster.add_node("pve1")
        cluster.add_node("pve2")
        fast: dict[str, Any] = {"boot_time_s": 0.2}
        cluster.add_guest(WEB, "lxc", "web", "pve1", status="running", static_ip=True, **fast)
        cluster.add_guest(SLEEPY, "lxc", "sleepy", "pve1", static_ip=True, **fast)
        cluster.add_guest(VM, "qemu", "vm", "pve2", status="running", **fast)
        cluster.add_guest(PAUSED, "qemu", "paused", "pve2", status="paused", **fast)
        lab = LabServer(cluster, host=HOST, port=0, certificate=self._certificate)
        await lab.start()
        try:
            await cluster.open()
            entry = lab_cluster(lab, username="root@pam", password=lab.credentials.root_password)
            config = {
                "proxmox": [entry],
                "listen": {"proxy": f"{HOST}:0", "api": f"{HOST}:0"},
                "api": {
                    "tokens": [
                        {
                            "name": "all",
                            "secret": TOKEN,
                            "scopes": ["read", "power", "exec", "node-exec"],
                        }
                    ]
                },
                "routes": [
                    {"host": "web.t.test", "guest": f"lab:{WEB}", "port": 8080},
                    {
                        "host": "sleepy.t.test",
                        "guest": f"lab:{SLEEPY}",
                        "port": 8080,
                        "idle": {"timeout": "1h", "wake_timeout": "10s"},
                    },
                ],
                "state": {"enabled": False},
            }
            self._config_path.write_text(yaml.safe_dump(config))
            daemon = Daemon(load_config(str(self._config_path)), config_path=self._config_path)
            await daemon.start()
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    await asyncio.gather(*(p.first_cycle.wait() for p in daemon.pollers))
                assert daemon.api_port is not None
                self.port = daemon.api_port
                self._ready.set()
                await self._stop.wait()
            finally:
                await daemon.stop()
        finally:
            await lab.stop()


@pytest.fixture
def live_api(tmp_path: Path, lab_certificate: LabCertificate) -> Iterator[LiveApi]:
    api = LiveApi(tmp_path / "pxproxy.yml", lab_certificate)
    api.start()
    try:
        yield api
    finally:
        api.stop()


# What lab path parameters look like: names, refs and nodes that exist (and some that do not).
_REAL = {
    "ref": ["lab:7321", "web", "sleepy", f"pve2/{VM}", "lxc/7322", str(PAUSED), "nothere"],
    "node": ["pve1", "pve2", "lab:pve1", "nonode"],
    "vmid": [str(WEB), str(VM), "7339"],
    "action": ["start", "stop", "shutdown", "reboot", "suspend", "resume", "dance"],
    "file": ["index.html", "nothere.js"],
}


# A guest's node and vmid go together (else nearly every pick is a 404).
_ON_NODE = [("pve1", str(WEB)), ("pve1", str(SLEEPY)), ("pve2", str(VM)), ("pve1", "7339")]


def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    given = path_parameters or {}
    real: dict[str, Any] = {k: st.sampled_from(_REAL[k]) for k in given if k in _REAL}
    if not real:
        return st.just(given)
    lab = st.fixed_dictionaries(real)
    if {"node", "vmid"} <= set(given):
        pairs = st.sampled_from(_ON_NODE).map(lambda pair: {"node": pair[0], "vmid": pair[1]})
        lab = st.tuples(lab, pairs).map(lambda both: {**both[0], **both[1]})
    # Two lab picks to one generated: the lab's guests are where the answers are.
    return st.one_of(lab, lab, st.just(given))


def flatmap_body(context: Any, body: Any) -> Any:
    # Half the exec bodies or so are commands the lab's shell knows: their output streams back.
    if not context.operation.path.startswith("/exec/"):
        return st.just(body)
    known = st.sampled_from([["echo", "hi"], ["hostname"], ["uptime"], ["false"]])
    known_body = known.map(lambda argv: {"argv": argv, "timeout": 10})
    return st.one_of(known_body, st.just(body))


def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    # Bound the streams: a follow or a live feed never ends by itself.
    names = {p.name for p in context.operation.query}
    bounds = {k: v for k, v in BOUNDS.items() if k in names}
    if not bounds:
        return query
    return {**(query or {}), **bounds}


# (method, path template) -> statuses answered: the run must reach real guests, not only 404s.
SEEN: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)


def after_call(context: Any, case: Case[Any], response: Any) -> None:
    SEEN[(case.operation.method.upper(), case.operation.path)][response.status_code] += 1


@pytest.fixture
def api_schema(live_api: LiveApi) -> Iterator[Any]:
    response = requests.get(f"{live_api.url}/api/v1/openapi.json", timeout=CALL_TIMEOUT_S)
    assert response.status_code == 200  # open: no token
    schema = schemathesis.openapi.from_dict(response.json())
    schema.config.update(base_url=live_api.url)
    schema.config.max_stream_events = MAX_STREAM_EVENTS
    schema.hook(flatmap_path_parameters)
    schema.hook(map_query)
    schema.hook(flatmap_body)
    schema.hook(after_call)
    SEEN.clear()
    yield schema
    # After every operation's run: the lab's guests were reached, not only 404s.
    acting = [
        path
        for (method, path), statuses in SEEN.items()
        if method == "POST" and any(200 <= s < 300 for s in statuses)
    ]
    assert acting, f"no power action, wake or exec succeeded: {dict(SEEN)}"


schema = schemathesis.pytest.from_fixture("api_schema")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_the_live_api_conforms_to_its_document(case: Case[Any]) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=CALL_TIMEOUT_S,
        checks=CHECKS,
    )


def _lines(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


@pytest.mark.slow
def test_the_streams_lines_validate_against_their_models(live_api: LiveApi) -> None:
    """What schemathesis cannot check line by line (NDJSON, SSE data): each line of a real
    stream validates against the model the document names for it."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = live_api.url

    def get(path: str, **kwargs: Any) -> requests.Response:
        return requests.get(url + path, headers=auth, timeout=CALL_TIMEOUT_S, **kwargs)

    def post(path: str, **kwargs: Any) -> requests.Response:
        return requests.post(url + path, headers=auth, timeout=CALL_TIMEOUT_S, **kwargs)

    wake = _lines(post(f"/api/v1/guests/lab:{SLEEPY}/wake"))
    assert wake[-1]["state"] == "ready"
    for line in wake:
        m.WakeLine.model_validate(line)
    run = _lines(post(f"/exec/pve1/{WEB}?format=json", json={"argv": ["echo", "hi"]}))
    assert run[-1]["exit_status"] == 0
    for line in run:
        m.ExecLine.model_validate(line)
    for line in _lines(get(f"/stats/lab:{WEB}?format=json&stream=0")):
        m.GuestStats.model_validate(line)
    for line in _lines(get("/stats/node/pve1?stream=0")):
        m.NodeStats.model_validate(line)
    power = post(f"/api/v1/guests/lab:{VM}/reboot?wait=1")
    assert power.status_code == 200, power.text
    m.PowerAnswer.model_validate(power.json())
    kinds: list[str] = []
    with get("/api/v1/events", stream=True) as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")
        kind = ""
        for data in events.iter_lines():
            raw = data.decode()
            if raw.startswith("event: "):
                kind = raw.removeprefix("event: ")
            elif raw.startswith("data: "):
                m.EVENTS[kind].model_validate(json.loads(raw.removeprefix("data: ")))
                kinds.append(kind)
                if {"hello", "poll", "stats"} <= set(kinds):
                    break
    assert kinds[0] == "hello"
