"""`pxproxy check`: validate, connect to each cluster, print what pxproxy would see."""

from __future__ import annotations

import os
from typing import TextIO

from .api.allowlist import matches
from .config.allowlists import parse_guest_entry
from .config.dependencies import dependency_problems, ref_key, route_edges
from .config.models import Config
from .config.problems import Problem
from .inventory.guest_notes import GuestNotes
from .inventory.snapshot import Snapshot
from .inventory.store import Inventory
from .proxy.tls import ServerCertificates, TlsError
from .pve.errors import PveError
from .pve.termproxy import SHELL_USER
from .routing.route_set import Declared, merge
from .services import make_poller


async def check(config: Config, out: TextIO) -> int:
    inventory = Inventory()
    problems: list[str] = []
    declared: list[Declared] = []
    for name, cluster in zip(config.cluster_names(), config.proxmox, strict=True):
        poller, client = make_poller(name, cluster, inventory, config, None)
        try:
            version = await client.version()
            snap = await poller.poll_once()
            # What tagged guests declare in their notes, read as the daemon would.
            notes = GuestNotes(name, client)
            await notes.update(snap.guests)
            declared.extend(notes.declared())
        except PveError as exc:
            problems.append(f"cluster {name} ({cluster.url}): {exc}")
            continue
        finally:
            await client.close()
        running = sum(1 for g in snap.guests if g.status == "running")
        with_ip = sum(1 for g in snap.guests if g.ips)
        out.write(
            f"cluster {name}: {cluster.url} PVE {version.get('version', '?')}"
            f"{' (' + snap.pve_cluster_name + ')' if snap.pve_cluster_name else ''}\n"
            f"  nodes: {len(snap.nodes)} "
            f"({', '.join(f'{n.name} {n.status} {n.ip or chr(45)}' for n in snap.nodes)})\n"
            f"  guests: {len(snap.guests)} ({running} running, {with_ip} with addresses)\n"
        )
        for g in snap.guests:
            out.write(
                f"    {g.id:<12} {g.name or '-':<24} {g.node:<12} {g.status:<8} "
                f"{', '.join(g.ips) or '-'}\n"
            )
        problems.extend(f"cluster {name}: {w}" for w in snap.warnings)
    view = inventory.snapshot
    problems.extend(_check_routes(config, view))
    allowlist_problems, warnings = check_allowlists(config, view)
    problems.extend(allowlist_problems)
    tls_problems, tls_warnings = listener_tls_report(config, out)
    problems.extend(tls_problems)
    warnings.extend(tls_warnings)
    routes = merge(config.routes, declared)
    names = {d.guest: d.name for d in declared}
    for entry in routes.routes:
        route = entry.config
        if route.host:
            target = ", ".join(route.host)
        else:
            target = f"{route.listen}/udp" if route.protocol == "udp" else f"{route.listen}"
        origin = f" (notes of {names.get(entry.owner, entry.owner)})" if entry.owner else ""
        out.write(f"route {target} -> {route.guest}:{route.port}{origin}\n")
    # A guest's unusable notes cost that guest its routes, nothing else: warnings.
    warnings.extend(f"notes of {p.name} ({p.guest}): {p.error}" for p in routes.problems)
    warnings.extend(workers_warnings(config.proxy.workers, os.cpu_count()))
    warnings.extend(before_stop_warnings(config, view))
    for w in warnings:
        out.write(f"warning: {w}\n")
    if problems:
        for p in problems:
            out.write(f"problem: {p}\n")
        return 1
    out.write("ok\n")
    return 0


def _check_routes(config: Config, view: Snapshot) -> list[str]:
    problems = []
    for i, route in enumerate(config.routes):
        refs = [route.guest, *(route.idle.depends_on if route.idle else ())]
        for ref in refs:
            found = view.lookup_ref(ref).guests
            if not found:
                problems.append(f"routes[{i}]: guest {ref!r} not found")
            elif len(found) > 1:
                ids = ", ".join(g.ref for g in found)
                problems.append(f"routes[{i}]: guest {ref!r} is ambiguous ({ids})")
    for ref in config.guests:
        if not view.lookup_ref(ref).guests:
            problems.append(f"guests.{ref}: no such guest")
    problems.extend(str(p) for p in resolved_dependency_problems(config, view))
    return problems


def resolved_dependency_problems(config: Config, view: Snapshot) -> list[Problem]:
    """depends_on cycles that only the inventory shows: refs naming one guest in two ways
    (`wiki` and `101`). Validation has already refused every cycle by ref text."""

    def guest_of(ref: str) -> str:
        found = view.lookup_ref(ref).guests
        return found[0].ref if len(found) == 1 else ref_key(ref)

    edges = route_edges(
        (f"routes[{i}].idle.depends_on", route.guest, route.idle.depends_on)
        for i, route in enumerate(config.routes)
        if route.idle is not None
    )
    return dependency_problems(edges, guest_of, " once refs are resolved to guests")


_BARE = {
    "vmid": "a bare vmid",
    "name": "a bare name",
    "glob": "a glob",
    "node": "a node/vmid ref (clusters may share node names)",
}


def check_allowlists(config: Config, view: Snapshot) -> tuple[list[str], list[str]]:
    """Problems and warnings about the tokens' guest allowlists, given what the poll found.

    Problems: an entry naming a cluster that is not configured, or matching several guests
    (it allows none of them). Warnings, with several clusters: every entry other than `*` and
    cluster:vmid, since a guest renamed or created in any cluster can make it ambiguous."""
    problems: list[str] = []
    warnings: list[str] = []
    clusters = config.cluster_names()
    for i, token in enumerate(config.api.tokens):
        for j, text in enumerate(token.guests):
            where = f"api.tokens[{i}].guests[{j}]"
            entry = parse_guest_entry(text)
            if entry.kind == "all":
                continue
            if entry.kind == "cluster":
                if entry.cluster not in clusters:
                    problems.append(
                        f"{where}: {text!r} names no configured cluster ({', '.join(clusters)})"
                    )
                continue
            found = matches(entry, view)
            if len(found) > 1:
                refs = ", ".join(g.ref for g in found)
                problems.append(
                    f"{where}: {text!r} matches {len(found)} guests ({refs}), so it allows none "
                    "of them; use cluster:vmid"
                )
            elif len(clusters) > 1:
                now = f"; it is {found[0].ref} now" if found else ""
                warnings.append(
                    f"{where}: {text!r} is {_BARE[entry.kind]}: with {len(clusters)} clusters "
                    f"it stops allowing anything once a second guest matches (a rename is "
                    f"enough); prefer cluster:vmid{now}"
                )
    return problems, warnings


def listener_tls_report(config: Config, out: TextIO) -> tuple[list[str], list[str]]:
    """`proxy.tls` loaded as the listener would: one line per certificate (what it covers,
    until when), then (problems, warnings). Expiry is a warning: the daemon serves it."""
    if config.proxy.tls is None:
        return [], []
    try:
        certs = ServerCertificates.load(config.proxy.tls)
    except TlsError as exc:
        return [str(exc)], []
    for index, info in enumerate(certs.certificates()):
        names = ", ".join(info.names) or "no DNS names"
        role = " (default)" if index == 0 else ""
        out.write(f"tls {info.cert_path}{role}: {names}; until {info.not_after:%Y-%m-%d}\n")
    return [], certs.warnings()


def workers_warnings(workers: int, cores: int | None) -> list[str]:
    """More proxy processes than cores only adds switching between them."""
    if cores is not None and workers > cores:
        return [
            f"proxy.workers is {workers} on a machine with {cores} cores: "
            f"more processes than cores do not serve more"
        ]
    return []


def before_stop_warnings(config: Config, view: Snapshot) -> list[str]:
    """An LXC guest's `idle.before_stop` runs through a node shell, which only a root@pam
    password ticket opens: without one the command fails each time (the stop still comes)."""
    shells = {
        name: cluster.username == SHELL_USER and cluster.password is not None
        for name, cluster in zip(config.cluster_names(), config.proxmox, strict=True)
    }
    warnings = []
    for i, route in enumerate(config.routes):
        if route.idle is None or route.idle.before_stop is None:
            continue
        for guest in view.lookup_ref(route.guest).guests:
            if guest.type == "lxc" and not shells.get(guest.cluster, False):
                warnings.append(
                    f"routes[{i}].idle.before_stop: {guest.ref} is a container, whose command "
                    f"runs in a node shell; cluster {guest.cluster} needs username: "
                    f"{SHELL_USER} and password for it (without, the command fails and the "
                    f"stop goes ahead)"
                )
    return warnings
