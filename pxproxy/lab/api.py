"""The lab's Proxmox-compatible HTTP API over a LabCluster: PVE's paths, shapes, auth and
error answers (shared/pve-reference.md), for the subset pxproxy uses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from .access import LabAccess
from .state import LabCluster, LabError, LabGuest

log = logging.getLogger(__name__)

API = "/api2/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER = web.RequestKey("user", str)
PARAMS = web.RequestKey("params", dict)
POWER_ACTIONS = frozenset({"start", "stop", "shutdown", "reboot", "suspend", "resume"})
_MAX_BODY = 64 * 1024
# The config options PUT .../config stores in the lab (PVE has many more).
CONFIG_OPTIONS = frozenset({"description", "tags"})
MAX_DESCRIPTION = 8192  # PVE's schema: maxLength of description
# PVE's wording differs by kind: pve-container uses PVE::Tools::assert_if_modified, qemu-server
# its own check (the typo is PVE's).
DIGEST_CHANGED = {
    "lxc": "detected modified configuration - file changed by other user? Try again.",
    "qemu": "checksum missmatch (file change by other user?)",
}


def pve_error(status: int, message: str, errors: dict[str, str] | None = None) -> web.Response:
    """PVE's error answer: the message as reason phrase and (since 8.3) in the body."""
    body: dict[str, Any] = {"data": None, "message": message + "\n"}
    if errors:
        body["errors"] = errors
    reason = message.splitlines()[0][:200] if message else None
    return web.json_response(body, status=status, reason=reason)


def ok(data: Any) -> web.Response:
    return web.json_response({"data": data})


def mac_of(vmid: int) -> str:
    return f"BC:24:11:{vmid >> 16 & 255:02X}:{vmid >> 8 & 255:02X}:{vmid & 255:02X}"


def static_ip(guest: LabGuest) -> bool:
    return bool(guest.static_ip)


class LabApi:
    def __init__(self, cluster: LabCluster, access: LabAccess, *, latency_s: float = 0.0) -> None:
        self.cluster = cluster
        self.access = access
        self.latency_s = latency_s
        # (method, path) of every request, for tests to count and inspect.
        self.requests: list[tuple[str, str]] = []
        self._extra_routes: list[tuple[str, str, Handler]] = []

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Extra endpoints (the shell and journal) registered before app() is built."""
        self._extra_routes.append((method, path, handler))

    def count(self, suffix: str, method: str = "GET") -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_BODY)
        r = app.router
        node = API + "/nodes/{node}"
        guest = node + "/{type:lxc|qemu}/{vmid}"
        r.add_post(API + "/access/ticket", self._ticket)
        r.add_get(API + "/version", self._version)
        r.add_get(API + "/nodes", self._nodes)
        r.add_get(API + "/cluster/status", self._cluster_status)
        r.add_get(API + "/cluster/resources", self._resources)
        r.add_get(node + "/status", self._node_status)
        r.add_get(node + "/tasks/{upid}/status", self._task_status)
        r.add_get(node + "/tasks/{upid}/log", self._task_log)
        r.add_get(guest + "/status/current", self._status_current)
        r.add_post(guest + "/status/{action}", self._power)
        r.add_get(guest + "/config", self._config)
        r.add_put(guest + "/config", self._config_put)
        r.add_get(node + "/lxc/{vmid}/interfaces", self._interfaces)
        r.add_get(node + "/qemu/{vmid}/agent/network-get-interfaces", self._agent_interfaces)
        for method, path, handler in self._extra_routes:
            r.add_route(method, API + path, handler)
        r.add_route("*", "/{tail:.*}", self._not_implemented)
        return app

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        try:
            request[PARAMS] = await _params(request)
            if request.path != API + "/access/ticket":
                request[USER] = self.access.authenticate(
                    request.method,
                    request.headers.get("Authorization"),
                    request.cookies.get("PVEAuthCookie"),
                    request.headers.get("CSRFPreventionToken"),
                )
            node = request.match_info.get("node")
            if node is not None:
                self.cluster.node(node)  # 595 for an offline node, as pveproxy answers
            return await handler(request)
        except LabError as exc:
            return pve_error(exc.status, exc.message, exc.errors)
        except web.HTTPException:
            raise
        except Exception:
            # The lab must answer, never crash: a bug becomes PVE's generic 500.
            log.exception("lab: %s %s", request.method, request.path)
            return pve_error(500, "internal error")

    async def _not_implemented(self, request: web.Request) -> web.Response:
        raise LabError(501, f"Method '{request.method} {request.path}' not implemented")

    def _guest(self, request: web.Request, privilege: str) -> LabGuest:
        vmid = _vmid(request.match_info["vmid"])
        kind = request.match_info.get("type") or request.path.split("/")[5]
        guest = self.cluster.guest(vmid, request.match_info["node"], kind)  # type: ignore[arg-type]
        self.access.require(request[USER], f"/vms/{vmid}", privilege)
        return guest

    # ------------------------------------------------------------------ access

    async def _ticket(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        missing = {
            k: "property is missing and it is not optional"
            for k in ("username", "password")
            if not params.get(k)
        }
        if missing:
            raise LabError(400, "Parameter verification failed.", missing)
        user, ticket, csrf = self.access.login(str(params["username"]), str(params["password"]))
        return ok({"username": user, "ticket": ticket, "CSRFPreventionToken": csrf, "cap": {}})

    # ------------------------------------------------------------------ cluster

    async def _version(self, request: web.Request) -> web.Response:
        return ok({"version": "8.4.14", "release": "8.4", "repoid": "b502d23c55afcba1"})

    async def _nodes(self, request: web.Request) -> web.Response:
        out = []
        for entry in self.cluster.resources("node"):
            if self.access.allowed(request[USER], f"/nodes/{entry['node']}", "Sys.Audit"):
                out.append(entry)
        return ok(out)

    async def _cluster_status(self, request: web.Request) -> web.Response:
        self.access.require(request[USER], "/", "Sys.Audit")
        return ok(self.cluster.cluster_status())

    async def _resources(self, request: web.Request) -> web.Response:
        kind = request[PARAMS].get("type")
        if kind not in (None, "vm", "node", "storage", "sdn", "pool"):
            raise LabError(
                400,
                "Parameter verification failed.",
                {
                    "type": f"value '{kind}' does not have a value in the enumeration "
                    "'vm, storage, node, sdn, pool'"
                },
            )
        user = request[USER]
        out = []
        for entry in self.cluster.resources(kind):
            if entry["type"] == "node":
                path, privilege = f"/nodes/{entry['node']}", "Sys.Audit"
            else:
                path, privilege = f"/vms/{entry['vmid']}", "VM.Audit"
            if self.access.allowed(user, path, privilege):
                out.append(entry)
        return ok(out)

    async def _node_status(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        self.access.require(request[USER], f"/nodes/{node}", "Sys.Audit")
        return ok(self.cluster.node_status(node))

    # ------------------------------------------------------------------ tasks

    async def _task_status(self, request: web.Request) -> web.Response:
        task = self.cluster.task(request.match_info["upid"])
        self._task_visible(request, task.user, task.node)
        return ok(task.status_json())

    async def _task_log(self, request: web.Request) -> web.Response:
        task = self.cluster.task(request.match_info["upid"])
        self._task_visible(request, task.user, task.node)
        params = request[PARAMS]
        start = _int_param(params, "start", 0)
        limit = _int_param(params, "limit", 50)
        return ok(task.log_json(start, limit))

    def _task_visible(self, request: web.Request, owner: str, node: str) -> None:
        user = request[USER]
        if user not in (owner, owner.split("!", 1)[0]):
            self.access.require(user, f"/nodes/{node}", "Sys.Audit")

    # ------------------------------------------------------------------ guests

    async def _status_current(self, request: web.Request) -> web.Response:
        guest = self._guest(request, "VM.Audit")
        return ok(self.cluster.status_current(guest.vmid, guest.node, guest.type))

    async def _power(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in POWER_ACTIONS:
            raise LabError(501, f"Method '{request.method} {request.path}' not implemented")
        guest = self._guest(request, "VM.PowerMgmt")
        params = request[PARAMS]
        allowed = {"shutdown": {"timeout", "forceStop"}, "suspend": {"todisk"}}.get(action, set())
        extra = set(params) - allowed - {"skiplock"}
        if extra:
            raise LabError(
                400,
                "Parameter verification failed.",
                {
                    k: "property is not defined in schema and the schema does not allow "
                    "additional properties"
                    for k in sorted(extra)
                },
            )
        user = request[USER]
        where: dict[str, Any] = {"node": guest.node, "type": guest.type}
        if action == "shutdown":
            timeout = _int_param(params, "timeout", 60)
            force = _bool_param(params, "forceStop")
            task = self.cluster.shutdown(
                guest.vmid, user, timeout_s=timeout, force_stop=force, **where
            )
        elif action == "suspend" and _bool_param(params, "todisk"):
            task = self.cluster.suspend_todisk(guest.vmid, user, **where)
        else:
            task = getattr(self.cluster, action)(guest.vmid, user, **where)
        return ok(task.upid)

    async def _config(self, request: web.Request) -> web.Response:
        guest = self._guest(request, "VM.Audit")
        return ok(guest_config(guest))

    async def _config_put(self, request: web.Request) -> web.Response:
        """The options the lab stores: description, tags; `delete` and `digest` as PVE."""
        guest = self._guest(request, "VM.Config.Options")
        params: dict[str, Any] = request[PARAMS].copy()
        digest = params.pop("digest", None)
        delete = split_list(str(params.pop("delete", "") or ""))
        _check_options(params, delete, digest)
        if not params and not delete:
            raise LabError(500, "no options specified")
        if digest and digest != guest_config(guest)["digest"]:
            raise LabError(500, DIGEST_CHANGED[guest.type])
        self.cluster.set_options(
            guest,
            description=_text_param(params, "description"),
            tags=_text_param(params, "tags"),
            delete=tuple(delete),
        )
        return ok(None)

    async def _interfaces(self, request: web.Request) -> web.Response:
        guest = self._guest(request, "VM.Audit")
        if guest.status != "running":
            return ok(None)
        return ok(lxc_interfaces(guest))

    async def _agent_interfaces(self, request: web.Request) -> web.Response:
        guest = self._guest(request, "VM.GuestAgent.Audit")
        if not guest.agent:
            raise LabError(500, "No QEMU guest agent configured")
        if guest.status != "running":
            raise LabError(500, f"VM {guest.vmid} is not running")
        if guest.paused:
            raise LabError(500, "QEMU guest agent is not running")
        return ok({"result": agent_interfaces(guest)})


# ---------------------------------------------------------------------- shapes


def guest_config(guest: LabGuest) -> dict[str, Any]:
    ip = f"{guest.ip}/8" if static_ip(guest) else "dhcp"
    mem_mib = guest.maxmem // 2**20
    config: dict[str, Any]
    if guest.type == "lxc":
        config = {
            "hostname": guest.name,
            "arch": "amd64",
            "ostype": "debian",
            "cores": guest.maxcpu,
            "memory": mem_mib,
            "swap": 512,
            "rootfs": f"local-lvm:vm-{guest.vmid}-disk-0,size={guest.maxdisk // 2**30}G",
            "net0": f"name=eth0,bridge=vmbr0,firewall=1,hwaddr={mac_of(guest.vmid)},ip={ip},"
            "type=veth",
            "unprivileged": 1,
        }
    else:
        config = {
            "name": guest.name,
            "cores": guest.maxcpu,
            "sockets": 1,
            "memory": str(mem_mib),
            "ostype": "l26",
            "scsi0": f"local-lvm:vm-{guest.vmid}-disk-0,size={guest.maxdisk // 2**30}G",
            "net0": f"virtio={mac_of(guest.vmid)},bridge=vmbr0,firewall=1",
            "boot": "order=scsi0;net0",
        }
        if guest.agent:
            config["agent"] = "1"
        else:
            config["ipconfig0"] = f"ip={ip}" + (",gw=127.0.0.1" if static_ip(guest) else "")
    if guest.description:
        config["description"] = guest.description
    if guest.tags:
        config["tags"] = ";".join(guest.tags)
    if guest.lock:
        config["lock"] = guest.lock
    # PVE's digest is the SHA-1 of the config file: any change of the config changes it.
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    config["digest"] = hashlib.sha1(blob.encode("utf-8", "surrogatepass")).hexdigest()
    return config


def lxc_interfaces(guest: LabGuest) -> list[dict[str, Any]]:
    """The PVE 8.4+ shape: legacy inet/inet6 plus ip-addresses (prefix as a string)."""
    mac = mac_of(guest.vmid).lower()
    return [
        {
            "name": "lo",
            "hwaddr": "00:00:00:00:00:00",
            "hardware-address": "00:00:00:00:00:00",
            "inet": "127.0.0.1/8",
            "inet6": "::1/128",
            "ip-addresses": [
                {"ip-address-type": "inet", "ip-address": "127.0.0.1", "prefix": "8"},
                {"ip-address-type": "inet6", "ip-address": "::1", "prefix": "128"},
            ],
        },
        {
            "name": "eth0",
            "hwaddr": mac,
            "hardware-address": mac,
            "inet": f"{guest.ip}/8",
            "ip-addresses": [{"ip-address-type": "inet", "ip-address": guest.ip, "prefix": "8"}],
        },
    ]


def agent_interfaces(guest: LabGuest) -> list[dict[str, Any]]:
    return [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
            ],
        },
        {
            "name": "ens18",
            "hardware-address": mac_of(guest.vmid).lower(),
            "ip-addresses": [{"ip-address": guest.ip, "ip-address-type": "ipv4", "prefix": 8}],
            "statistics": {"rx-bytes": guest.netin, "tx-bytes": guest.netout},
        },
    ]


# ---------------------------------------------------------------------- parameters


async def _params(request: web.Request) -> dict[str, Any]:
    """Query string plus form or JSON body, as PVE reads parameters."""
    params = _collect(request.query.items())
    if request.method in ("GET", "HEAD"):
        return params
    body = await request.read()
    if not body:
        return params
    try:
        if request.content_type == "application/json":
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            params.update(data)
        else:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
            params.update(_collect(pairs))
    except (ValueError, UnicodeDecodeError):
        raise LabError(400, "Parameter verification failed.", {"body": "malformed"}) from None
    return params


def _collect(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A repeated name becomes a list, as PVE reads array parameters (agent exec's command)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            have = out[key]
            out[key] = [*have, value] if isinstance(have, list) else [have, value]
        else:
            out[key] = value
    return out


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: items separated by ',', ';' or white space."""
    return [item for item in re.split(r"[,;\s]+", text) if item]


def _check_options(params: dict[str, Any], delete: list[str], digest: object) -> None:
    """PVE's parameter verification for the options the lab stores."""
    errors: dict[str, str] = {}
    for key in sorted(set(params) - CONFIG_OPTIONS):
        errors[key] = (
            "property is not defined in schema and the schema does not allow additional properties"
        )
    description = params.get("description")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION:
        errors["description"] = f"value may only be {MAX_DESCRIPTION} characters long"
    if digest is not None and len(str(digest)) > 40:
        errors["digest"] = "value may only be 40 characters long"
    for opt in delete:
        if opt not in CONFIG_OPTIONS:
            errors["delete"] = f"unknown option '{opt}'"
        elif opt in params:
            errors["delete"] = f"you can't use '-{opt}' and -delete {opt}' at the same time"
    if errors:
        raise LabError(400, "Parameter verification failed.", errors)


def _text_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise LabError(
            400,
            "Parameter verification failed.",
            {name: f"type check ('string') failed - got {type(value).__name__.upper()}"},
        )
    return str(value)


def _vmid(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 100 <= int(text) <= 999_999_999:
        raise LabError(
            400,
            "Parameter verification failed.",
            {"vmid": f"value '{text}' does not look like a valid VM ID"},
        )
    return int(text)


def _int_param(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    text = str(value)
    if not text.lstrip("-").isascii() or not text.lstrip("-").isdigit():
        raise LabError(
            400,
            "Parameter verification failed.",
            {name: f"type check ('integer') failed - got '{text}'"},
        )
    number = int(text)
    if number < 0:
        raise LabError(
            400, "Parameter verification failed.", {name: "value must have a minimum value of 0"}
        )
    return number


def _bool_param(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return False
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise LabError(
        400,
        "Parameter verification failed.",
        {name: f"type check ('boolean') failed - got '{value}'"},
    )
