"""The audit log: every power action, every command run in a guest or on a node, and every
refusal (a missing scope, a guest outside the allowlist, input refused), one JSON line each.

Who (token name), what (action or argv), on which guest, when, the result and how long it took.
With `audit.path` the lines go to that file, hash-chained (pxproxy/audit/); without it, to the
`pxproxy.audit` logger, so operators route it like any other log. `AuditLog.records` keeps the
recent ones for tests and the API.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from ..audit.chained_file import ChainedFile

audit_log = logging.getLogger("pxproxy.audit")
log = logging.getLogger(__name__)

RECENT = 1000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    token: str
    action: str  # "exec", "journal", "tail", "start", "stop", ...
    guest: str  # cluster:vmid, or the node for node-level commands; a refusal: the ref asked for
    detail: dict[str, Any] = field(default_factory=dict)  # argv, file, service, ...
    result: str = "ok"  # "ok", "exit 1", "failed: <message>", "rejected: <rule>", "denied: ..."
    duration_s: float = 0.0
    at: float = field(default_factory=time.time)


class AuditLog:
    def __init__(self, file: ChainedFile | None = None) -> None:
        self.records: deque[AuditRecord] = deque(maxlen=RECENT)
        self.file = file

    @classmethod
    def open(cls, path: str | None) -> AuditLog:
        """The log for `audit.path`; raises AuditFileError when the file cannot be opened."""
        return cls(ChainedFile(path) if path else None)

    def write(self, record: AuditRecord) -> None:
        self.records.append(record)
        if self.file is None:
            audit_log.info("%s", json.dumps(asdict(record), sort_keys=True, default=str))
            return
        try:
            self.file.append(asdict(record))
        except OSError as exc:
            # Not lost: the record goes to the logger, and the chain goes on at the next
            # record that can be written.
            log.error(
                "cannot write to the audit file %s: %s; the record is in the pxproxy.audit log",
                self.file.path,
                exc.strerror or exc,
            )
            audit_log.warning("%s", json.dumps(asdict(record), sort_keys=True, default=str))

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                log.error("cannot close the audit file %s: %s", self.file.path, exc)
