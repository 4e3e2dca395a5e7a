from __future__ import annotations

import time

from aiohttp import web

from ._common import context, json_response


async def health(request: web.Request) -> web.Response:
    """ok when every cluster's last poll succeeded; degraded (still HTTP 200) otherwise, so a
    stale inventory is visible without taking the proxy out of a load balancer."""
    ctx = context(request)
    snap = ctx.inventory.snapshot
    now = time.monotonic()
    clusters = []
    for name in ctx.cluster_names:
        cs = snap.clusters.get(name)
        age = cs.age_s(now) if cs else None
        entry: dict[str, object] = {
            "name": name,
            "ok": bool(cs and cs.ok),
            # ok | degraded (entries rejected, last good data kept) | failed | pending (no poll yet)
            "state": cs.state if cs else "pending",
            "last_poll_age_s": round(age, 3) if age is not None else None,
            "guests": len(cs.guests) if cs else 0,
            "nodes": len(cs.nodes) if cs else 0,
        }
        if cs is None:
            entry["error"] = "not polled yet"
        elif cs.error:
            entry["error"] = cs.error
        if cs is not None and cs.warnings:
            entry["warnings"] = list(cs.warnings)
        clusters.append(entry)
    status = "ok" if clusters and all(c["ok"] for c in clusters) else "degraded"
    body: dict[str, object] = {"status": status, "clusters": clusters}
    config = ctx.config_status()
    if config.degraded:
        body["status"] = "degraded"
    shown: dict[str, object] = {}
    if config.reload_errors:
        # The old config still runs; the file on disk does not validate.
        shown.update(reload="failed", errors=list(config.reload_errors))
    if config.listen_errors:
        shown["listen_errors"] = list(config.listen_errors)
    if config.restart_needed:
        shown["restart_needed"] = list(config.restart_needed)
    if shown:
        body["config"] = shown
    if ctx.proxy_workers is not None:
        workers = ctx.proxy_workers()
        body["proxy_workers"] = workers
        if not all(w["running"] and w["listening"] for w in workers):
            body["status"] = "degraded"  # one starting again: its share goes elsewhere
    return json_response(body)
