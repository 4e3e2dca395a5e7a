"""The OpenAPI 3.1 document of the management API, built from handlers.ROUTES and the models
of models.py: one operation per route, its scope as a security scheme, its errors as problem
documents. A route without an entry in OPERATIONS is left out of the document, and a test
fails for it (tests/api/test_openapi.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..config.models import Scope
from . import models as m

if TYPE_CHECKING:
    from .handlers import Route

__all__ = [
    "OPERATIONS",
    "POWER_ACTIONS",
    "SCOPES",
    "Operation",
    "canonical_path",
    "document",
    "document_json",
    "undocumented",
]

SCOPES: dict[Scope, str] = {
    "read": "inventory, routes, statistics and the node journal",
    "power": "power actions and wakes of the guests in the token's allowlist",
    "exec": "commands, journals and files inside the guests of the token's allowlist",
    "node-exec": "commands on the nodes themselves (a root shell on the hypervisor)",
}
PROBLEM_TYPE = "application/problem+json"
# handlers/power.py's ACTIONS (a test holds them equal; importing it here would be circular).
POWER_ACTIONS = ("start", "stop", "shutdown", "reboot", "suspend", "resume")
_TITLES = {
    304: "Not Modified: the If-None-Match ETag is current",
    400: "Bad request: a parameter or the body breaks a rule (named in the problem)",
    401: "No token, or not one of api.tokens",
    403: "The token lacks the scope, or the guest is not in its allowlist",
    404: "No such guest, node or object",
    409: "Ambiguous (candidates), or a state conflict (already running, not running...)",
    501: "Needs configuration this cluster lacks (shells without a root@pam password...)",
    502: "Proxmox answered, but not usefully (credentials, TLS, a failed task...)",
    503: "Proxmox or the node is unreachable, or pxproxy is stopping (Retry-After)",
    504: "Proxmox or the command did not finish in time",
}


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    description: str = ""
    # None: open to anyone. optional_auth: the scope, or no token at all (integrations.public).
    scope: Scope | None = "read"
    optional_auth: bool = False
    any_token: bool = False  # a valid token of any scope
    # (name, schema, description) of each query parameter.
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    # media type -> (schema or model, description) of the success answer.
    ok: dict[str, Any] = field(default_factory=dict)
    ok_status: int = 200
    other_ok: dict[int, tuple[type[BaseModel], str]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    tag: str = "inventory"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _flag(default: bool) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": ["0", "1", "true", "false", "yes", "no"],
        "default": "1" if default else "0",
    }


_TEXT = {"type": "string"}
_FILTERS_GUESTS = ("cluster", "node", "type", "status", "name")
_LIMIT = {"type": "string", "pattern": "^[0-9]{1,4}$", "default": "100"}
_SERVICE = {"type": "array", "items": {"type": "string"}}
_FILE = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_GUEST_ERRORS = (404, 409)
_STREAM_ERRORS = (400, 404, 409, 501, 502, 503, 504)
_FOLLOWS = (
    "Follows (new lines as they come) until the client leaves or pxproxy stops; `follow=0` "
    "ends after the backlog."
)
_STATS_STREAM = (
    "One sample per second until the client leaves: text lines "
    "`STATUS|CPU%|MEM USAGE/LIMIT|MEM%|NET I/O|BLOCK I/O`, NDJSON with `format=json`, SSE "
    "(`event: stats` / `event: error`, then `event: end` when pxproxy stops) with `Accept: "
    "text/event-stream`, WebSocket messages on upgrade. `stream=0` answers one sample. Errors "
    "after the first sample are events (`error: ...` lines) and the stream goes on."
)


def _ndjson(model: type[BaseModel]) -> tuple[Any, str]:
    return model, "one JSON object per line"


def _sse(kinds: dict[str, type[BaseModel] | None], what: str) -> tuple[Any, str]:
    """The schema of one SSE event (OpenAPI 3.1 describes a stream by its events): its
    `event:` kind and its `data:` text, JSON of the kind's model where it has one."""
    events = []
    for kind, model in kinds.items():
        data: dict[str, Any] = {"type": "string"}
        if model is not None:
            data.update(contentMediaType="application/json", contentSchema=_ref(model))
        events.append(
            {
                "type": "object",
                "properties": {"event": {"const": kind}, "data": data},
                "required": ["event", "data"],
            }
        )
    return {"oneOf": events} if len(events) > 1 else events[0], what


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/health"): Operation(
        "Health of each cluster's poll (open)",
        "ok when every cluster's last poll succeeded; degraded (still 200) otherwise.",
        scope=None,
        ok={"application/json": m.Health},
        tag="service",
    ),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics",
        ok={"text/plain": (_TEXT, "Prometheus text exposition format")},
        tag="service",
    ),
    ("GET", "/api/v1/openapi.json"): Operation(
        "This document (open)",
        scope=None,
        ok={"application/json": ({"type": "object"}, "OpenAPI 3.1")},
        tag="service",
    ),
    ("GET", "/api/v1/guests"): Operation(
        "Every guest, optionally filtered",
        "Exact matches of cluster, node, type, status and name, or a tag; other parameters "
        "are refused (400).",
        query=(
            *((k, _TEXT, f"only guests whose {k} is this") for k in _FILTERS_GUESTS),
            ("tag", _TEXT, "only guests with this tag"),
        ),
        ok={"application/json": m.GuestList},
        errors=(400,),
    ),
    ("GET", "/api/v1/guests/{ref}"): Operation(
        "One guest by ref",
        "`cluster:vmid`, `node/vmid`, `type/vmid`, a vmid, a name or an alias.",
        ok={"application/json": m.Guest},
        errors=_GUEST_ERRORS,
    ),
    ("POST", "/api/v1/guests/{ref}/wake"): Operation(
        "Wake a guest through idle-watch, streaming each stage",
        "As a request to one of its routes would: dependencies, start or resume, the "
        "readiness probe. NDJSON lines `{state, step, elapsed_s}` per stage, then one with "
        "state ready or failed. Ends when the wake does (bounded by the route's wake_timeout). "
        "The guest needs a route with idle settings (else 409).",
        scope="power",
        ok={"application/x-ndjson": _ndjson(m.WakeLine)},
        errors=(400, *_GUEST_ERRORS, 503),
        tag="power",
    ),
    ("POST", "/api/v1/guests/{ref}/{action}"): Operation(
        "A power action: start, stop, shutdown, reboot, suspend, resume",
        "202 once Proxmox took the task; with `wait=1`, 200 when it ended well (502 when it "
        "failed, 504 when `timeout` passed first: the task goes on).",
        scope="power",
        query=(
            ("wait", _flag(False), "wait for the Proxmox task"),
            ("timeout", _TEXT, "how long to wait: a duration such as 30s, at most 900s"),
        ),
        ok={"application/json": m.PowerAnswer},
        ok_status=202,
        other_ok={200: (m.PowerAnswer, "the task ended well (wait=1)")},
        errors=(400, *_GUEST_ERRORS, 502, 503, 504),
        tag="power",
    ),
    ("GET", "/api/v1/lookup"): Operation(
        "Reverse lookup: the guest or node of an address, a host name or an alias",
        "Exactly one of the parameters.",
        query=(
            ("ip", _TEXT, "an address of a guest or node"),
            ("host", _TEXT, "a route's host, or a name the name rules map to a guest"),
            ("alias", _TEXT, "an alias from the guest's tags or notes"),
        ),
        ok={"application/json": m.Lookup},
        errors=(400, *_GUEST_ERRORS),
    ),
    ("GET", "/api/v1/nodes"): Operation("Every node", ok={"application/json": m.NodeList}),
    ("GET", "/api/v1/routes"): Operation(
        "Every route with its idle settings, activity and wake state",
        "Then the routes guests' notes declare but got wrong (with `error`, not served).",
        ok={"application/json": m.RouteList},
    ),
    ("GET", "/api/v1/events"): Operation(
        "Live events (Server-Sent Events)",
        "One stream per dashboard; it never ends by itself. Each message is `event: <kind>` "
        "and `data: <JSON object>`; a `: keep-alive` comment every 15 s. Kinds: "
        + ", ".join(f"`{k}` ({v.__name__})" for k, v in m.EVENTS.items())
        + ". `overflow` ends the stream: the reader fell behind. Events about a guest reach "
        "only tokens whose allowlist admits it.",
        ok={"text/event-stream": _sse(dict(m.EVENTS), "SSE messages, one per event")},
        tag="events",
    ),
    ("GET", "/ui/"): Operation(
        "The dashboard (HTML)",
        "Signs in with a bearer token kept in sessionStorage; the page itself is open. With "
        "an ETag: If-None-Match answers 304.",
        scope=None,
        ok={"text/html": (_TEXT, "the dashboard page")},
        errors=(304,),
        tag="ui",
    ),
    ("GET", "/api/v1/me"): Operation(
        "The token asking: name, scopes, guest allowlist",
        "Any valid token may ask (whatever its scopes).",
        ok={"application/json": m.Me},
        any_token=True,
        tag="service",
    ),
    ("GET", "/api/v1/audit"): Operation(
        "Recent audit records (newest first) and whether the audit file's chain verifies",
        "Records of the guests the token's allowlist admits, and its own; commands (`argv`) "
        "only for tokens with the exec scope.",
        query=(("limit", _LIMIT, "records, 1..1000"),),
        ok={"application/json": m.AuditTrail},
        errors=(400,),
        tag="service",
    ),
    ("GET", "/api/v1/webhooks"): Operation(
        "Each webhook's deliveries, failures and queue",
        ok={"application/json": m.WebhookList},
        tag="events",
    ),
    ("GET", "/ui/{file}"): Operation(
        "A file of the dashboard (HTML, CSS, JS)",
        "Open; only the files pxproxy ships. With an ETag: If-None-Match answers 304.",
        scope=None,
        ok={
            "text/html": (_TEXT, ""),
            "text/css": (_TEXT, ""),
            "text/javascript": (_TEXT, ""),
        },
        errors=(304, 404),
        tag="ui",
    ),
    ("GET", "/ui"): Operation("Redirects to /ui/", scope=None, ok_status=308, ok={}, tag="ui"),
    ("GET", "/dashboard"): Operation(
        "Redirects to /ui/", scope=None, ok_status=308, ok={}, tag="ui"
    ),
    ("GET", "/"): Operation("Redirects to /ui/", scope=None, ok_status=308, ok={}, tag="ui"),
    ("GET", "/api/v1/"): Operation(
        "Where to start (open): the OpenAPI document, the dashboard, /health and the events",
        scope=None,
        ok={"application/json": m.ApiIndex},
        tag="service",
    ),
    ("GET", "/api/v1"): Operation(
        "The same as /api/v1/", scope=None, ok={"application/json": m.ApiIndex}, tag="service"
    ),
    ("POST", "/exec/{node}/{vmid}"): Operation(
        "Run an argv inside a guest, streaming its output",
        "LXC through the node's shell (`pct exec`), QEMU through the guest agent. Text ends "
        "with `[exit status N]`; with `format=json`, NDJSON `{output}` lines then "
        "`{exit_status, duration_s}`. Ends with the command (bounded by `timeout`).",
        scope="exec",
        query=(("format", {"type": "string", "enum": ["text", "json", "ndjson"]}, ""),),
        body=m.ExecRequest,
        ok={
            "text/plain": (_TEXT, "the output, then [exit status N]"),
            "application/x-ndjson": _ndjson(m.ExecLine),
        },
        errors=_STREAM_ERRORS,
        tag="exec",
    ),
    ("POST", "/exec/{node}"): Operation(
        "Run an argv on a node itself, streaming its output",
        "Needs the node-exec scope. As exec in a guest otherwise.",
        scope="node-exec",
        query=(("format", {"type": "string", "enum": ["text", "json", "ndjson"]}, ""),),
        body=m.ExecRequest,
        ok={
            "text/plain": (_TEXT, "the output, then [exit status N]"),
            "application/x-ndjson": _ndjson(m.ExecLine),
        },
        errors=(400, 404, 409, 501, 502, 503, 504),
        tag="exec",
    ),
    ("GET", "/journal/{node}/{vmid}"): Operation(
        "The journal inside a guest",
        _FOLLOWS + " QEMU guests need follow=0 (the guest agent cannot stream).",
        scope="exec",
        query=(
            ("limit", _LIMIT, "backlog lines, 1..1000"),
            ("service", _SERVICE, "systemd units (repeat)"),
            ("follow", _flag(True), "follow new lines"),
        ),
        ok={"text/plain": (_TEXT, "journal lines")},
        errors=_STREAM_ERRORS,
        tag="exec",
    ),
    ("GET", "/tail/{node}/{vmid}"): Operation(
        "tail -f of files inside a guest",
        _FOLLOWS,
        scope="exec",
        query=(
            ("file", _FILE, "absolute paths (repeat); the token's paths may limit them"),
            ("limit", {**_LIMIT, "default": "10"}, "backlog lines, 1..1000"),
            ("follow", _flag(True), "follow new lines"),
        ),
        ok={"text/plain": (_TEXT, "the files' lines")},
        errors=_STREAM_ERRORS,
        tag="exec",
    ),
    ("GET", "/tail/{node}"): Operation(
        "tail -f of files on a node",
        _FOLLOWS + " Only tokens allowed on every guest (guests: ['*']).",
        scope="exec",
        query=(
            ("file", _FILE, "absolute paths (repeat)"),
            ("limit", {**_LIMIT, "default": "10"}, "backlog lines, 1..1000"),
            ("follow", _flag(True), "follow new lines"),
        ),
        ok={"text/plain": (_TEXT, "the files' lines")},
        errors=(400, 404, 409, 501, 502, 503, 504),
        tag="exec",
    ),
    ("GET", "/stats/node/{node}"): Operation(
        "Live statistics of a node",
        _STATS_STREAM.replace("text lines", "NDJSON (the default here), text with format=text"),
        query=(
            ("stream", _flag(True), "0: one sample"),
            ("format", {"type": "string", "enum": ["text", "json"], "default": "json"}, ""),
        ),
        ok={
            "application/x-ndjson": _ndjson(m.NodeStats),
            "text/plain": (_TEXT, "STATUS|CPU%|MEM USAGE/LIMIT|MEM%|ROOTFS|LOAD|CPUS"),
            "text/event-stream": _sse(
                {"stats": None, "error": None, "end": None},
                "the stats text or JSON (format=) of a sample, an error, the end",
            ),
        },
        errors=_STREAM_ERRORS,
        tag="streams",
    ),
    ("GET", "/stats/{ref}"): Operation(
        "Live statistics of a guest",
        _STATS_STREAM,
        query=(
            ("stream", _flag(True), "0: one sample"),
            ("format", {"type": "string", "enum": ["text", "json"], "default": "text"}, ""),
        ),
        ok={
            "text/plain": (_TEXT, "STATUS|CPU%|MEM USAGE/LIMIT|MEM%|NET I/O|BLOCK I/O"),
            "application/x-ndjson": _ndjson(m.GuestStats),
            "text/event-stream": _sse(
                {"stats": None, "error": None, "end": None},
                "the stats text or JSON (format=) of a sample, an error, the end",
            ),
        },
        errors=_STREAM_ERRORS,
        tag="streams",
    ),
    ("GET", "/journal/{node}"): Operation(
        "The journal of a node (Proxmox API)",
        _FOLLOWS + " Errors after the first line are `error: ...` lines.",
        query=(
            ("limit", _LIMIT, "backlog lines, 1..1000"),
            ("service", _SERVICE, "systemd units (repeat)"),
            ("follow", _flag(True), "follow new lines"),
        ),
        ok={"text/plain": (_TEXT, "journal lines")},
        errors=(400, 404, 409, 502, 503, 504),
        tag="streams",
    ),
    ("GET", "/integrations/traefik"): Operation(
        "Traefik's dynamic configuration (HTTP provider)",
        "With an ETag: If-None-Match answers 304 until something changed.",
        optional_auth=True,
        ok={"application/json": m.TraefikConfig},
        errors=(304,),
        tag="integrations",
    ),
    ("GET", "/integrations/prometheus-sd"): Operation(
        "Prometheus HTTP service discovery",
        "With an ETag: If-None-Match answers 304 until something changed.",
        optional_auth=True,
        query=(
            ("type", {"type": "array", "items": _TEXT}, "lxc or qemu (repeat)"),
            ("status", {"type": "array", "items": _TEXT}, "guest status (repeat)"),
            ("tag", {"type": "array", "items": _TEXT}, "a tag (repeat)"),
        ),
        ok={"application/json": m.PrometheusTargets},
        errors=(304, 400),
        tag="integrations",
    ),
    ("GET", "/integrations/ansible-inventory"): Operation(
        "Ansible dynamic inventory (--list, or ?host= for one host's variables)",
        "With an ETag: If-None-Match answers 304 until something changed.",
        optional_auth=True,
        query=(("host", _TEXT, "one host's variables"),),
        ok={"application/json": m.AnsibleInventory},
        errors=(304, 400),
        tag="integrations",
    ),
}


def canonical_path(path: str) -> str:
    """aiohttp's `{ref:.+}` as OpenAPI's `{ref}` (the metrics label's form too)."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def _models(ops: Iterable[Operation]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [m.Problem, *m.EVENTS.values()]
    for op in ops:
        candidates = [*op.ok.values(), *(v[0] for v in op.other_ok.values()), op.body]
        for item in candidates:
            model = item[0] if isinstance(item, tuple) else item
            if isinstance(model, type) and issubclass(model, BaseModel) and model not in found:
                found.append(model)
    return found


def _content(item: Any) -> dict[str, Any]:
    schema, description = item if isinstance(item, tuple) else (item, "")
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        schema = _ref(schema)
    out: dict[str, Any] = {"schema": schema}
    if description:
        out["x-description"] = description
    return out


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _TITLES[status],
        "content": {PROBLEM_TYPE: {"schema": _ref(m.Problem)}},
    }


def _parameters(path: str, op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in re.findall(r"\{(\w+)\}", path):
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if name == "vmid":
            schema = {"type": "string", "pattern": "^[0-9]+$"}
        elif name == "action":
            schema = {"type": "string", "enum": list(POWER_ACTIONS)}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, schema, description in op.query:
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        if description:
            param["description"] = description
        params.append(param)
    return params


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": op.summary}
    if op.ok:
        ok["content"] = {media: _content(item) for media, item in op.ok.items()}
    responses: dict[str, Any] = {str(op.ok_status): ok}
    for status, (model, description) in op.other_ok.items():
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": _ref(model)}},
        }
    errors = set(op.errors)
    if op.scope is not None:
        errors |= {401, 403}
    for status in sorted(errors):
        if status == 304:
            responses["304"] = {"description": _TITLES[304]}
        else:
            responses[str(status)] = _problem(status)
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(path, op),
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if op.scope is None:
        out["security"] = []
    elif op.any_token:
        out["security"] = [{scope: []} for scope in SCOPES]
    elif op.optional_auth:
        # A token with read, or none at all when integrations.public is on (loopback).
        out["security"] = [{op.scope: []}, {}]
    else:
        out["security"] = [{op.scope: []}]
    if op.scope is not None and not op.any_token:
        out["x-pxproxy-scope"] = op.scope
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return out


def _operation_id(method: str, path: str) -> str:
    # "/ui/" and "/ui" are two operations: the trailing slash gets a word of its own.
    path = path[:-1] + "/index" if path.endswith("/") else path
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """The document of `routes` (handlers.ROUTES): those without an OPERATIONS entry are
    left out (undocumented() names them)."""
    paths: dict[str, dict[str, Any]] = {}
    used: list[Operation] = []
    for route in routes:
        path = canonical_path(route.path)
        op = OPERATIONS.get((route.method, path))
        if op is None:
            continue
        used.append(op)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route.method, path, op)
    _, schemas = models_json_schema(
        [(model, "serialization") for model in _models(used)],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pxproxy management API",
            "version": "1",
            "description": (
                "Errors are problem documents (RFC 9457). Every non-streaming GET answers "
                "HEAD too. Without configured tokens, a loopback listener answers the read "
                "endpoints without one."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                scope: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"a token of api.tokens with the {scope} scope: {what}",
                }
                for scope, what in SCOPES.items()
            },
        },
    }


def undocumented(routes: Sequence[Route]) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in routes
        if (r.method, canonical_path(r.path)) not in OPERATIONS
    ]


@cache
def document_json(routes: tuple[Route, ...]) -> str:
    """Built on first request and kept: ROUTES and the models do not change at run time."""
    return json.dumps(document(routes), separators=(",", ":"))
