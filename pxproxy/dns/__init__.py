"""An authoritative DNS responder for one zone (`dns:` in the config): guests' names, aliases,
vmids and route hosts answer A/AAAA, SRV and PTR from the current inventory snapshot and route
set; a parked guest's names answer pxproxy's proxy address instead, so a proxy that re-resolves
lands on pxproxy and the request wakes the guest. No recursion, ever.

zone.py builds the indexes once per (snapshot, route set); answer.py turns a parsed query into a
response; wire.py parses, rate-limits nothing and counts; server.py holds the UDP and TCP
listeners and the per-client rate limit.
"""
