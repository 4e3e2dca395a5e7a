"""Inputs of the renderers, built by hand: routes, a snapshot, gates in a chosen state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.routing.route_set import RouteSet, merge
from pxproxy.wake.contract import AlwaysReady, Gate, WakeState

from ..builders import make_node


def route(**data: Any) -> RouteConfig:
    return RouteConfig.model_validate(data)


def route_set(*routes: RouteConfig) -> RouteSet:
    return merge(routes, ())


def snapshot(*guests: Guest) -> Snapshot:
    clusters: dict[str, list[Guest]] = {}
    for guest in guests:
        clusters.setdefault(guest.cluster, []).append(guest)
    return Snapshot(
        {
            name: ClusterSnapshot.build(
                name,
                members,
                [make_node(n, cluster=name) for n in sorted({g.node for g in members})],
            )
            for name, members in clusters.items()
        }
    )


class StateGate(AlwaysReady):
    """A gate that only reports a state (the renderers read nothing else)."""

    def __init__(self, state: WakeState) -> None:
        self.state = state


class Gates:
    """gate_for: the state given for a route's guest ref, else ready; counts the questions."""

    def __init__(self, states: Mapping[str, WakeState] | None = None) -> None:
        self.states = dict(states or {})
        self.asked: list[RouteConfig] = []

    def __call__(self, route: RouteConfig) -> Gate:
        self.asked.append(route)
        return StateGate(self.states.get(route.guest, WakeState.READY))
