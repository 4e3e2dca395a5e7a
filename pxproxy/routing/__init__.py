"""Host → route decisions shared by the proxy and the management API (no import of either)."""
