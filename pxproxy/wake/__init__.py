"""Idle-watch: wake sleeping guests on demand, stop them when idle. Transport-free."""

from .contract import AlwaysReady, Gate, WakeError, WakeProgress, WakeState, WakeTimeout
from .manager import DependencyCycleError, WakeManager
from .power import PowerControl, PowerError, PowerOutcomeUnknown, PvePowerControl
from .readiness import HttpProbe, Probe, TcpProbe, probe_for
from .stats import WakeObserver, WakeStats
from .waker import Waker

__all__ = [
    "AlwaysReady",
    "DependencyCycleError",
    "Gate",
    "HttpProbe",
    "PowerControl",
    "PowerError",
    "PowerOutcomeUnknown",
    "Probe",
    "PvePowerControl",
    "TcpProbe",
    "WakeError",
    "WakeManager",
    "WakeObserver",
    "WakeProgress",
    "WakeState",
    "WakeStats",
    "WakeTimeout",
    "Waker",
    "probe_for",
]
