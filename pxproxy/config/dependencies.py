"""`depends_on` self-references and cycles: none of the guests in a cycle could be woken first.

Validation compares refs by their text (`ref_key`); refs naming one guest in two ways (`wiki`
and `101`) are only known to be the same with the inventory, so `pxproxy check` runs the same
check again after its poll with a key that resolves refs (pxproxy/check.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from .problems import Problem


class DependencyEdge(NamedTuple):
    """Route `guest` waits for `dependency` to be up before it is woken."""

    guest: str
    dependency: str
    path: str  # key path of the depends_on entry, e.g. routes[0].idle.depends_on[1]


def route_edges(routes: Iterable[tuple[str, str, Sequence[str]]]) -> list[DependencyEdge]:
    """Edges from (key path of a route's depends_on, its guest, the depends_on refs)."""
    return [
        DependencyEdge(guest, dependency, f"{path}[{j}]")
        for path, guest, depends_on in routes
        for j, dependency in enumerate(depends_on)
    ]


def ref_key(ref: str) -> str:
    """The identity of a ref as written; the wake manager keys unresolved refs the same way."""
    return ref.strip().lower()


def dependency_problems(
    edges: Sequence[DependencyEdge],
    key: Callable[[str], str] = ref_key,
    context: str = "",
) -> list[Problem]:
    """Each self-reference, then each distinct cycle once (named by the key paths of its edges).
    `context` is added to each message (e.g. how refs were resolved)."""
    problems: list[Problem] = []
    graph: dict[str, list[DependencyEdge]] = {}
    for edge in edges:
        if key(edge.guest) == key(edge.dependency):
            problems.append(
                Problem(
                    edge.path,
                    f"{edge.dependency!r} is this route's own guest{context}: a guest cannot "
                    "wait for itself to be woken",
                )
            )
            continue
        graph.setdefault(key(edge.guest), []).append(edge)
    seen: set[tuple[str, ...]] = set()

    def visit(node: str, trail: list[DependencyEdge], on_trail: list[str]) -> None:
        for edge in graph.get(node, ()):
            target = key(edge.dependency)
            if target in on_trail:
                cycle = [*trail[on_trail.index(target) :], edge]
                nodes = tuple(sorted(key(e.guest) for e in cycle))
                if nodes not in seen:
                    seen.add(nodes)
                    problems.append(_cycle_problem(cycle, context))
                continue
            visit(target, [*trail, edge], [*on_trail, target])

    for start in list(graph):  # config order: the first route of a cycle names it
        visit(start, [], [start])
    return problems


def _cycle_problem(cycle: list[DependencyEdge], context: str) -> Problem:
    names = " -> ".join([cycle[0].guest, *(e.dependency for e in cycle)])
    others = ", ".join(e.path for e in cycle[1:])
    return Problem(
        cycle[0].path,
        f"depends_on forms a cycle{context}: {names} (with {others}); none of them could be "
        "woken first",
    )
