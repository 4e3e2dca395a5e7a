"""Each webhook format's request body and headers for one Notice.

Guest names, route names and Proxmox errors are user-controlled: where a format interprets
markup (Discord's and Slack's mentions and markdown) they are escaped, and every text is cut
to the format's limits."""

from __future__ import annotations

import json
import re
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .config import WebhookEvent, WebhookFormat
from .notices import Notice

USER_AGENT = f"pxproxy/{__version__}"

_HEADLINES: dict[WebhookEvent, str] = {
    "wake": "Waking {who}",
    "ready": "{who} is ready",
    "wake_failed": "{who} failed to start",
    "idle_stop": "{who} stopped after being idle",
    "cluster_degraded": "Cluster {cluster} is {state}",
    "cluster_recovered": "Cluster {cluster} recovered",
}
# Discord embed colours and ntfy tags/priorities, by event.
_COLOURS: dict[WebhookEvent, int] = {
    "wake": 0x3498DB,
    "ready": 0x2ECC71,
    "wake_failed": 0xE74C3C,
    "idle_stop": 0x95A5A6,
    "cluster_degraded": 0xE67E22,
    "cluster_recovered": 0x2ECC71,
}
_TAGS: dict[WebhookEvent, str] = {
    "wake": "hourglass_flowing_sand",
    "ready": "white_check_mark",
    "wake_failed": "x",
    "idle_stop": "zzz",
    "cluster_degraded": "warning",
    "cluster_recovered": "white_check_mark",
}
_URGENT = frozenset({"wake_failed", "cluster_degraded"})

MAX_FIELD = 200  # any one user-controlled text, before the format's own limits
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    headers: dict[str, str]


def clean(text: str | None, limit: int = MAX_FIELD) -> str:
    """One line of printable text, cut to `limit` characters."""
    if not text:
        return ""
    flat = _CONTROL_RE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _who(notice: Notice, escape: Callable[[str], str]) -> str:
    name = escape(clean(notice.name)) if notice.name else ""
    ref = escape(clean(notice.guest))
    return f"{name} ({ref})" if name else ref


def headline(notice: Notice, escape: Callable[[str], str] = lambda s: s) -> str:
    return _HEADLINES[notice.event].format(
        who=_who(notice, escape),
        cluster=escape(clean(notice.cluster)),
        state=escape(clean(notice.state)),
    )


def _details(notice: Notice, escape: Callable[[str], str]) -> list[tuple[str, str]]:
    label = "Detail" if notice.event == "idle_stop" else "Error"
    rows = [
        ("Routes", clean(", ".join(notice.routes))),
        ("Node", clean(notice.node)),
        (label, clean(notice.error, 500)),
    ]
    # Only rows with text: Discord refuses an embed field with an empty value.
    return [(name, escape(text)) for name, text in rows if text]


def payload(notice: Notice) -> dict[str, Any]:
    """The generic JSON document (also what the json format signs)."""
    return {
        "event": notice.event,
        "guest": notice.guest,
        "name": notice.name,
        "node": notice.node,
        "routes": list(notice.routes),
        "state": notice.state,
        "error": notice.error,
        "cluster": notice.cluster,
        "at": notice.at,
        "pxproxy": __version__,
    }


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


# ------------------------------------------------------------------ Discord

_DISCORD_MARKDOWN_RE = re.compile(r"([\\*_~`|>\[\]()#-])")


def discord_escape(text: str) -> str:
    """No markdown, no mentions: `@everyone`/`@here` get a zero-width space after the @, and
    `<@id>`, `<#id>`, `<@&id>` lose their `<` (allowed_mentions is the second guard)."""
    text = _DISCORD_MARKDOWN_RE.sub(r"\\\1", text)
    text = text.replace("@", "@\u200b")
    return text.replace("<", "\\<")


def _discord(notice: Notice) -> dict[str, Any]:
    title = headline(notice, discord_escape)
    fields = [
        {"name": label, "value": value[:1024], "inline": label != "Error"}
        for label, value in _details(notice, discord_escape)
    ]
    return {
        "content": title[:2000],
        "embeds": [
            {
                "title": title[:256],
                "color": _COLOURS[notice.event],
                "timestamp": _iso(notice.at),
                "fields": fields,
                "footer": {"text": USER_AGENT},
            }
        ],
        "allowed_mentions": {"parse": []},
        "username": "pxproxy",
    }


# ------------------------------------------------------------------ Slack


def slack_escape(text: str) -> str:
    """Slack's own rule: &, < and > as entities, so no `<!everyone>`, `<@U123>` or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(notice: Notice) -> dict[str, Any]:
    title = headline(notice, slack_escape)
    lines = [f"*{label}:* {value}" for label, value in _details(notice, slack_escape)]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"[:3000]}}
    ]
    if lines:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{USER_AGENT} · {_iso(notice.at)}"}],
        }
    )
    return {"text": title[:3000], "blocks": blocks}


# ------------------------------------------------------------------ ntfy


def _header_text(text: str) -> str:
    """A header value: one line; beyond ASCII as RFC 2047 UTF-8 (ntfy decodes it)."""
    line = clean(text, 250)
    if line.isascii():
        return line
    return "=?UTF-8?B?" + b64encode(line.encode()).decode() + "?="


def _ntfy(notice: Notice) -> Rendered:
    lines = [headline(notice)] + [f"{label}: {value}" for label, value in _details(notice, str)]
    return Rendered(
        "\n".join(lines).encode(),
        {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _header_text(headline(notice)),
            "Tags": f"{_TAGS[notice.event]},pxproxy,{notice.event}",
            "Priority": "4" if notice.event in _URGENT else "3",
        },
    )


def _json_body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def render(notice: Notice, fmt: WebhookFormat) -> Rendered:
    """The body and format headers (not yet the signature or the auth: those are per attempt)."""
    if fmt == "ntfy":
        return _ntfy(notice)
    if fmt == "discord":
        document = _discord(notice)
    elif fmt == "slack":
        document = _slack(notice)
    else:
        document = payload(notice)
    return Rendered(_json_body(document), {"Content-Type": "application/json"})
