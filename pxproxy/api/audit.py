"""The audit log: every power action and every command run in a guest, one JSON line each.

Who (token name), what (action or argv), on which guest, when, the result and how long it took.
Written through the `pxproxy.audit` logger, so operators route it like any other log (a file
handler, journald); `AuditLog.records` keeps the recent ones for tests and the API.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

audit_log = logging.getLogger("pxproxy.audit")

RECENT = 1000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    token: str
    action: str  # "exec", "journal", "tail", "start", "stop", ...
    guest: str  # cluster:vmid, or the node for node-level commands
    detail: dict[str, Any] = field(default_factory=dict)  # argv, file, service, ...
    result: str = "ok"  # "ok", "exit 1", "failed: <message>", "rejected: <rule>"
    duration_s: float = 0.0
    at: float = field(default_factory=time.time)


class AuditLog:
    def __init__(self) -> None:
        self.records: deque[AuditRecord] = deque(maxlen=RECENT)

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)
        audit_log.info("%s", json.dumps(asdict(record), sort_keys=True, default=str))
