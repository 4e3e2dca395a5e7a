"""The proxy's host → route table. It lives in pxproxy/routing/ so that the management API's
host lookup decides exactly as the proxy does without importing the proxy."""

from __future__ import annotations

from ..routing.hosts import RouteMatch, RouteTable, normalise_host

__all__ = ["RouteMatch", "RouteTable", "normalise_host"]
