"""Prometheus HTTP service discovery: target groups of guests, with prometheus-pve-sd's labels.

Per guest (templates left out), in `cluster:vmid` order:
- one group whose targets are the guest's addresses (IPv6 bracketed), no port: Prometheus
  adds the scrape config's default, or a relabel rule sets one;
- one group per distinct port of the routes to that guest, targets `<address>:<port>`, with
  `__meta_pve_port` and `__meta_pve_routes` (the routes' names, `;` between routes: a name
  is its hosts joined by commas, or `tcp:<listen>`).
A guest with no known address has no targets, so no group.

Labels: `__meta_pve_vmid`, `_name`, `_type` (lxc, qemu), `_status`, `_node`, `_cluster`,
`_tags` (comma-separated, as prometheus-pve-sd writes them; absent without tags), `_ipv4` and
`_ipv6` (the first address of each family; absent when there is none).
"""

from __future__ import annotations

from typing import Any

from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from ..routing.route_set import RouteSet
from .addresses import first_of_family, url_host
from .filters import ALL_GUESTS, GuestFilters

TAG_SEPARATOR = ","
ROUTE_SEPARATOR = ";"


def prometheus_sd(
    snapshot: Snapshot, routes: RouteSet, filters: GuestFilters = ALL_GUESTS
) -> list[dict[str, Any]]:
    ports = _route_ports(snapshot, routes)
    groups: list[dict[str, Any]] = []
    for guest in sorted(snapshot.guests, key=lambda g: (g.cluster, g.vmid)):
        if guest.template or not filters.admits(guest):
            continue
        hosts = [url_host(ip) for ip in guest.ips]
        if not hosts:
            continue
        labels = guest_labels(guest)
        groups.append({"targets": hosts, "labels": labels})
        for port, names in sorted(ports.get(guest.ref, {}).items()):
            groups.append(
                {
                    "targets": [f"{host}:{port}" for host in hosts],
                    "labels": {
                        **labels,
                        "__meta_pve_port": str(port),
                        "__meta_pve_routes": ROUTE_SEPARATOR.join(sorted(names)),
                    },
                }
            )
    return groups


def guest_labels(guest: Guest) -> dict[str, str]:
    labels = {
        "__meta_pve_vmid": str(guest.vmid),
        "__meta_pve_name": guest.name,
        "__meta_pve_type": guest.type,
        "__meta_pve_status": guest.status,
        "__meta_pve_node": guest.node,
        "__meta_pve_cluster": guest.cluster,
    }
    if guest.tags:
        labels["__meta_pve_tags"] = TAG_SEPARATOR.join(guest.tags)
    for version, key in ((4, "__meta_pve_ipv4"), (6, "__meta_pve_ipv6")):
        ip = first_of_family(guest, version)
        if ip is not None:
            labels[key] = ip
    return labels


def _route_ports(snapshot: Snapshot, routes: RouteSet) -> dict[str, dict[int, set[str]]]:
    """guest ref -> port -> names of the routes to it; refs that do not name exactly one
    guest lead nowhere (as in the proxy, which refuses an ambiguous one)."""
    out: dict[str, dict[int, set[str]]] = {}
    for route in routes.routes:
        guests = snapshot.lookup_ref(route.config.guest).guests
        if len(guests) != 1:
            continue
        out.setdefault(guests[0].ref, {}).setdefault(route.config.port, set()).add(route.name)
    return out
