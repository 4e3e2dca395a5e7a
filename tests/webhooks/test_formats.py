"""The Discord, Slack and ntfy bodies, with hostile guest names."""

from __future__ import annotations

import json

from pxproxy.webhooks.formats import render
from pxproxy.webhooks.notices import Notice

HOSTILE = "@everyone <@123> <!channel> *bold* [x](https://evil)"
NOTICE = Notice(
    "wake_failed",
    1_700_000_000.0,
    guest="lab:7361",
    name=HOSTILE,
    node="pve1",
    routes=("wiki.test",),
    state="failed",
    error="startup failed\nsecond line",
    cluster="lab",
)


def test_discord_content_embed_and_no_mentions() -> None:
    body = json.loads(render(NOTICE, "discord").body)
    assert body["allowed_mentions"] == {"parse": []}
    content = body["content"]
    assert "@everyone" not in content
    assert "<@123>" not in content
    assert "@\u200beveryone" in content
    assert "\\*bold\\*" in content
    assert "\\[x\\]\\(https://evil\\)" in content
    (embed,) = body["embeds"]
    assert embed["title"] == content
    assert embed["timestamp"] == "2023-11-14T22:13:20Z"
    assert {f["name"]: f["value"] for f in embed["fields"]} == {
        "Routes": "wiki.test",
        "Node": "pve1",
        "Error": "startup failed second line",
    }


def test_slack_text_and_blocks_escape_mentions() -> None:
    body = json.loads(render(NOTICE, "slack").body)
    text = body["text"]
    assert "<" not in text
    assert ">" not in text
    assert "&lt;@123&gt;" in text
    assert "&lt;!channel&gt;" in text
    section, details, context = body["blocks"]
    assert section["text"]["type"] == "mrkdwn"
    assert text in section["text"]["text"]
    assert "*Error:* startup failed second line" in details["text"]["text"]
    assert context["type"] == "context"


def test_ntfy_title_beyond_ascii_and_without_newlines() -> None:
    notice = Notice("ready", 1.0, guest="lab:7361", name="wïki\r\nX-Evil: 1", cluster="lab")
    rendered = render(notice, "ntfy")
    title = rendered.headers["Title"]
    assert title.startswith("=?UTF-8?B?")
    assert "\n" not in title
    assert "\r" not in title
    assert rendered.headers["Priority"] == "3"
    assert rendered.body.decode() == "wïki X-Evil: 1 (lab:7361) is ready"


def test_long_names_are_cut() -> None:
    notice = Notice("ready", 1.0, guest="lab:7361", name="n" * 5000, cluster="lab")
    body = json.loads(render(notice, "discord").body)
    assert len(body["content"]) < 300
    assert body["content"].count("n") <= 200


def test_blank_details_make_no_empty_discord_field() -> None:
    notice = Notice("wake_failed", 1.0, guest="lab:7361", error=" \n ", cluster="lab")
    (embed,) = json.loads(render(notice, "discord").body)["embeds"]
    assert embed["fields"] == []
