"""The lab: a simulated Proxmox cluster on loopback whose guests serve real traffic."""

from __future__ import annotations

from .guest_servers import GuestServers
from .state import (
    GuestRuntime,
    LabCluster,
    LabError,
    LabGuest,
    LabNode,
    LabTask,
    guest_ip,
)

__all__ = [
    "GuestRuntime",
    "GuestServers",
    "LabCluster",
    "LabError",
    "LabGuest",
    "LabNode",
    "LabTask",
    "guest_ip",
]
