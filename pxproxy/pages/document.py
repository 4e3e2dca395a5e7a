"""The loading page and the error pages: one template (the built-in one, or the operator's
`proxy.pages.template`), one of the themes, and the values of one request.

The placeholders a template may use, and where (templating.py escapes each for its place):

| placeholder     | what it holds                                                              |
|-----------------|----------------------------------------------------------------------------|
| `$title`        | the heading: "Starting wiki", "Could not start wiki", or the error's title |
| `$name`         | the route's `page.title`, else the guest reference                         |
| `$guest`        | the guest reference (`cluster:vmid` or a name); empty on a 404             |
| `$host`         | the host the browser asked for                                             |
| `$logo`         | the route's `page.logo` (a URL or data:image URI), or empty                |
| `$accent`       | the route's `page.accent` colour, else the theme's (CSS)                   |
| `$theme`        | the theme's name                                                           |
| `$theme_css`    | the theme's stylesheet, accent included (only inside `<style>`)            |
| `$page`         | `loading` or `error`                                                       |
| `$state`        | the wake's state (asleep, waking, ready, stopping, failed); `error`       |
| `$stage`        | starting, port, ready or failed                                            |
| `$step`         | the step the wake is at ("Waiting for the port…")                          |
| `$error`        | why the wake failed, or the error page's detail; else empty                |
| `$status`       | the HTTP status (503 while loading)                                        |
| `$elapsed`      | seconds since the wake began when the page was made, empty if not known    |
| `$events_url`   | the progress stream (Server-Sent Events) the page follows                  |
| `$heartbeat_s`  | how often the stream sends a `heartbeat` event during a silent wake        |
| `$refresh`      | seconds after which a page without JavaScript reloads, empty on error pages|
| `$page_script`  | pxproxy's page script (only inside `<script>`): it drives the elements     |
|                 | `#title`, `#step`, `#stages` (li data-stage=starting/port/ready), `#elapsed`, |
|                 | `#heartbeat`, `#error` where they exist                                    |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import templating
from .templating import Kind, Template, Value, js_literal
from .themes import DEFAULT_ACCENT, ThemeName, theme_css

PLACEHOLDERS: Mapping[str, Kind] = {
    "title": "text",
    "name": "text",
    "guest": "text",
    "host": "text",
    "logo": "url",
    "accent": "css",
    "theme": "text",
    "theme_css": "css",
    "page": "text",
    "state": "text",
    "stage": "text",
    "step": "text",
    "error": "text",
    "status": "number",
    "elapsed": "number",
    "events_url": "url",
    "heartbeat_s": "number",
    "refresh": "number",
    "page_script": "script",
}
MAX_TEMPLATE_BYTES = 256 * 1024
STAGES = ("starting", "port", "ready")
LOADING_REFRESH_S = 5

BUILT_IN = """<!doctype html>
<html lang="en" data-theme="$theme" data-page="$page" data-state="$state">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>$title</title>
<noscript><meta http-equiv="refresh" content="$refresh"></noscript>
<style>$theme_css</style>
</head>
<body>
<main class="card" id="card">
  <img class="logo" id="logo" src="$logo" alt="">
  <p class="status" id="status">$status</p>
  <div class="spinner" aria-hidden="true"></div>
  <h1 id="title">$title</h1>
  <div class="host" id="host">$host</div>
  <div class="step" id="step" role="status" aria-live="polite">$step</div>
  <ol id="stages" data-current="$stage" aria-label="Progress">
    <li data-stage="starting">Starting the guest</li>
    <li data-stage="port">Waiting for the port</li>
    <li data-stage="ready">Ready</li>
  </ol>
  <div class="meta"><span>Elapsed <span id="elapsed">0:00</span></span>
    <span id="heartbeat">Connecting…</span></div>
  <div id="error" role="alert">$error</div>
  <button type="button" id="retry" onclick="location.reload()">Try again</button>
</main>
<script>$page_script</script>
</body>
</html>
"""

# The page script: reads its data (appended as one escaped JSON literal), follows the stream.
_SCRIPT = """(function (d) {
  if (d.page !== "loading") { return; }
  var root = document.documentElement;
  function el(id) { return document.getElementById(id); }
  var title = el("title"), step = el("step"), error = el("error"), stages = el("stages");
  var elapsed = el("elapsed"), beat = el("heartbeat");
  var order = ["starting", "port", "ready"], stage = d.stage, started = null;
  var lastSign = Date.now();
  function text(node, value) { if (node) { node.textContent = value; } }
  function mark(current, failed) {
    if (!stages) { return; }
    var at = order.indexOf(current);
    var items = stages.querySelectorAll("li[data-stage]");
    for (var i = 0; i < items.length; i++) {
      var n = order.indexOf(items[i].getAttribute("data-stage"));
      items[i].className = n < at ? "done" : n === at ? (failed ? "failed" : "current") : "";
      if (n === at) { items[i].setAttribute("aria-current", "step"); }
      else { items[i].removeAttribute("aria-current"); }
    }
    stages.setAttribute("data-current", failed ? "failed" : current);
  }
  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds)), m = Math.floor(s / 60);
    s = s % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function tick() { if (started !== null) { text(elapsed, clock((Date.now() - started) / 1000)); } }
  function since(seconds) {
    if (typeof seconds === "number") { started = Date.now() - seconds * 1000; tick(); }
  }
  function alive() {
    lastSign = Date.now();
    if (beat) { beat.className = "alive"; beat.textContent = "Still working"; }
  }
  var timer = setInterval(function () {
    tick();
    if (beat && Date.now() - lastSign > 3000 * d.heartbeat_s) {
      beat.className = "lost"; beat.textContent = "No word from pxproxy…";
    }
  }, 1000);
  function quiet() {
    clearInterval(timer);
    if (beat) { beat.className = ""; beat.textContent = ""; }
  }
  function fail(reason) {
    quiet();
    root.setAttribute("data-state", "failed");
    mark(stage, true);
    text(title, d.failed_title);
    document.title = d.failed_title;
    text(step, "The guest could not be started");
    if (reason) { text(error, reason); }
  }
  // Unknown (the wake is only now starting): counted from the page's load.
  since(typeof d.elapsed === "number" ? d.elapsed : 0);
  mark(stage);
  if (d.state === "failed") { fail(""); }
  var source = new EventSource(d.events);
  source.onopen = alive;
  source.onerror = function () {
    if (beat) { beat.className = "lost"; beat.textContent = "Reconnecting…"; }
  };
  source.addEventListener("heartbeat", function (event) {
    alive();
    try { since(JSON.parse(event.data).elapsed); } catch (e) { /* a heartbeat is enough */ }
  });
  source.onmessage = function (event) {
    var p = JSON.parse(event.data);
    alive();
    if (p.state === "failed") { source.close(); fail(p.error || p.step); return; }
    since(p.elapsed);
    root.setAttribute("data-state", p.state);
    text(title, d.loading_title);
    document.title = d.loading_title;
    text(error, "");
    if (p.stage && p.stage !== "failed") { stage = p.stage; mark(stage); }
    if (p.state === "ready") {
      source.close(); quiet(); text(step, "Ready"); location.reload(); return;
    }
    text(step, p.step.charAt(0).toUpperCase() + p.step.slice(1) + "…");
  };
})"""

_BUILT_IN_TEMPLATE = templating.parse(BUILT_IN, PLACEHOLDERS)


def parse_template(source: str) -> Template:
    """An operator's template, checked; TemplateError says where it is wrong."""
    if len(source.encode()) > MAX_TEMPLATE_BYTES:
        raise templating.TemplateError(f"a template is at most {MAX_TEMPLATE_BYTES} bytes")
    return templating.parse(source, PLACEHOLDERS)


def stage_of(state: str, step: str) -> str:
    """Which of STAGES a wake's step belongs to (or failed); `state` a WakeState's value."""
    if state == "ready":
        return "ready"
    if state == "failed":
        return "failed"
    if step.startswith(("waiting for the port", "waiting for an address", "checking")):
        return "port"
    return "starting"


def step_text(step: str) -> str:
    return step[:1].upper() + step[1:] + "…" if step else "Starting…"


@dataclass(frozen=True, slots=True)
class PageLook:
    """How a route's pages look: its name and the page settings (`page:` of the route)."""

    name: str
    guest: str
    logo: str | None = None
    accent: str | None = None


@dataclass(frozen=True, slots=True)
class Pages:
    """The theme and template every page is made from (`proxy.pages`)."""

    theme: ThemeName = "default"
    template: Template = _BUILT_IN_TEMPLATE

    def loading(
        self,
        look: PageLook,
        *,
        host: str,
        state: str,
        step: str,
        error: str | None,
        elapsed_s: float | None,
        events_url: str,
        heartbeat_s: float,
    ) -> str:
        failed = state == "failed"
        loading_title = f"Starting {look.name}"
        failed_title = f"Could not start {look.name}"
        stage = stage_of(state, step)
        data: dict[str, Value] = {
            "page": "loading",
            "state": state,
            # A failed wake's page marks where it stopped: here, at the start.
            "stage": "starting" if failed else stage,
            "elapsed": None if elapsed_s is None else round(elapsed_s, 1),
            "events": events_url,
            "heartbeat_s": heartbeat_s,
            "loading_title": loading_title,
            "failed_title": failed_title,
        }
        return self._render(
            look,
            host=host,
            page="loading",
            title=failed_title if failed else loading_title,
            state=state,
            stage=stage,
            step="The guest could not be started" if failed else step_text(step),
            error=error or "",
            status=503,
            elapsed=None if elapsed_s is None else round(elapsed_s, 1),
            events_url=events_url,
            heartbeat_s=heartbeat_s,
            refresh=LOADING_REFRESH_S,
            data=data,
        )

    def error(
        self, look: PageLook | None, *, host: str, status: int, title: str, detail: str
    ) -> str:
        """An error page: `title` and `detail` are the problem document's."""
        return self._render(
            look or PageLook(name=host, guest=""),
            host=host,
            page="error",
            title=title,
            state="error",
            stage="failed",
            step="",
            error=detail,
            status=status,
            elapsed=None,
            events_url="",
            heartbeat_s=0,
            refresh="",
            data={"page": "error", "status": status},
        )

    def _render(self, look: PageLook, *, data: dict[str, Value], **values: Value) -> str:
        return self.template.render(
            {
                **values,
                "name": look.name,
                "guest": look.guest,
                "logo": look.logo or "",
                "accent": look.accent or DEFAULT_ACCENT,
                "theme": self.theme,
                "theme_css": theme_css(self.theme, look.accent),
                "page_script": f"{_SCRIPT}({js_literal(data)});",
            }
        )


DEFAULT_PAGES = Pages()
