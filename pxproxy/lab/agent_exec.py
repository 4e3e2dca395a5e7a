"""The QEMU guest agent's exec in the lab: `POST agent/exec` starts an argv (no shell), and
`GET agent/exec-status?pid=` reports it. Commands are simulated like the node shell's."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from .access import LabAccess
from .api import PARAMS, USER, LabApi, ok
from .consoles import LabJournals, LabShellHost
from .shell import ExecRecord, NodeShell
from .state import LabCluster, LabError, LabGuest

MAX_ARGV = 256
MAX_ARG_CHARS = 64 * 1024
MAX_KEPT = 1000


@dataclass(slots=True)
class _Exec:
    argv: list[str]
    task: asyncio.Task[tuple[str, str, int]]


class AgentExec:
    """Owns every running exec; `close()` cancels and awaits them."""

    def __init__(
        self,
        cluster: LabCluster,
        access: LabAccess,
        journals: LabJournals,
        record: list[ExecRecord],
    ) -> None:
        self.cluster = cluster
        self.access = access
        self.journals = journals
        self.record = record
        self._execs: dict[tuple[int, int], _Exec] = {}
        self._next_pid = 4000

    def register(self, api: LabApi) -> None:
        base = "/nodes/{node}/qemu/{vmid}/agent"
        api.add_route("POST", base + "/exec", self._exec)
        api.add_route("GET", base + "/exec-status", self._status)

    async def close(self) -> None:
        tasks = [e.task for e in self._execs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _guest(self, request: web.Request) -> LabGuest:
        text = request.match_info["vmid"]
        if not text.isascii() or not text.isdigit():
            raise LabError(400, "Parameter verification failed.", {"vmid": "invalid VM ID"})
        guest = self.cluster.guest(int(text), request.match_info["node"], "qemu")
        self.access.require(request[USER], f"/vms/{guest.vmid}", "VM.GuestAgent.Unrestricted")
        if not guest.agent:
            raise LabError(500, "No QEMU guest agent configured")
        if guest.status != "running":
            raise LabError(500, f"VM {guest.vmid} is not running")
        if guest.paused:
            raise LabError(500, "QEMU guest agent is not running")
        return guest

    async def _exec(self, request: web.Request) -> web.Response:
        guest = self._guest(request)
        command = request[PARAMS].get("command")
        argv = [command] if isinstance(command, str) else command
        if (
            not isinstance(argv, list)
            or not argv
            or len(argv) > MAX_ARGV
            or not all(isinstance(a, str) and len(a) <= MAX_ARG_CHARS for a in argv)
        ):
            raise LabError(
                400,
                "Parameter verification failed.",
                {"command": "property is missing or not a list of strings"},
            )
        stdin = request[PARAMS].get("input-data")
        self._next_pid += 1
        pid = self._next_pid
        host = LabShellHost(guest.node, self.cluster, self.journals)
        shell = NodeShell(host, root=True, recorder=self.record)
        task = asyncio.get_running_loop().create_task(
            shell.run_argv(
                f"guest:{guest.vmid}", list(argv), stdin if isinstance(stdin, str) else None
            )
        )
        self._execs[(guest.vmid, pid)] = _Exec(list(argv), task)
        self._prune()
        return ok({"pid": pid})

    def _prune(self) -> None:
        """Finished execs nobody asked about are forgotten past MAX_KEPT, oldest first."""
        excess = len(self._execs) - MAX_KEPT
        for key in [k for k, e in self._execs.items() if e.task.done()][: max(excess, 0)]:
            del self._execs[key]

    async def _status(self, request: web.Request) -> web.Response:
        guest = self._guest(request)
        pid_text = str(request[PARAMS].get("pid", ""))
        entry = self._execs.get((guest.vmid, int(pid_text))) if pid_text.isdigit() else None
        if entry is None:
            raise LabError(500, "Agent error: Invalid parameter 'pid'")
        if not entry.task.done():
            return ok({"exited": 0})
        out, err, status = entry.task.result()
        del self._execs[(guest.vmid, int(pid_text))]
        data: dict[str, object] = {"exited": 1, "exitcode": status}
        if out:
            data["out-data"] = out
        if err:
            data["err-data"] = err
        return ok(data)
