"""Where the loading page follows its wake: the page itself is pxproxy/pages/ (document.py
for the markup and script, themes.py for the looks)."""

from __future__ import annotations

EVENTS_PATH = "/.pxproxy/wake/events"
