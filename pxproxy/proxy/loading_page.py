"""The page a browser sees while its guest wakes: one self-contained document, no assets.

A Python module rather than a .html file so it ships with the package without package-data.
It follows the wake over Server-Sent Events and reloads itself when the guest is ready.
"""

from __future__ import annotations

import html
from string import Template

EVENTS_PATH = "/.pxproxy/wake/events"

# $-placeholders only; the script deliberately avoids "$" so Template leaves it alone.
_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting $name…</title>
<noscript><meta http-equiv="refresh" content="5"></noscript>
<style>
  :root { color-scheme: light dark; --accent: #e57000; }
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center;
         font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         background: #f4f5f7; color: #1d2330; }
  @media (prefers-color-scheme: dark) { body { background: #14171c; color: #e6e8ec; }
    .card { background: #1e232b !important; box-shadow: none !important; } }
  .card { width: min(28rem, calc(100vw - 2rem)); padding: 2rem 2.25rem; border-radius: 14px;
          background: #fff; box-shadow: 0 10px 30px rgba(20, 30, 50, .08); text-align: center; }
  h1 { font-size: 1.25rem; margin: 1rem 0 .25rem; font-weight: 600; }
  .host { opacity: .65; font-size: .9rem; word-break: break-all; }
  .step { margin-top: 1.25rem; font-weight: 500; }
  .spinner { width: 44px; height: 44px; margin: 0 auto; border-radius: 50%;
             border: 4px solid rgba(128, 128, 128, .25); border-top-color: var(--accent);
             animation: spin .9s linear infinite; }
  @keyframes spin { to { transform: rotate(360deg); } }
  .done .spinner { animation: none; border-color: #2e9e5b; }
  .failed .spinner { animation: none; border-color: #c62828; }
  .error { display: none; margin-top: 1rem; padding: .75rem 1rem; border-radius: 8px;
           text-align: left; background: rgba(198, 40, 40, .1); color: #c62828;
           font: .85rem/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
           white-space: pre-wrap; word-break: break-word; }
  .failed .error { display: block; }
  button { display: none; margin-top: 1.25rem; padding: .5rem 1.25rem; border: 0;
           border-radius: 8px; background: var(--accent); color: #fff; font: inherit;
           cursor: pointer; }
  .failed button { display: inline-block; }
</style>
</head>
<body>
<main class="card" id="card">
  <div class="spinner" aria-hidden="true"></div>
  <h1>Starting $name</h1>
  <div class="host">$host</div>
  <div class="step" id="step" role="status" aria-live="polite">$step</div>
  <div class="error" id="error">$error</div>
  <button type="button" onclick="location.reload()">Try again</button>
</main>
<script>
(function () {
  var card = document.getElementById("card");
  var step = document.getElementById("step");
  var error = document.getElementById("error");
  // The stream's first event is the current progress: it fills in a failure's error text.
  if ("$state" === "failed") { card.className = "card failed"; }
  var source = new EventSource("$events");
  source.onmessage = function (event) {
    var p = JSON.parse(event.data);
    step.textContent = p.step.charAt(0).toUpperCase() + p.step.slice(1) + "…";
    if (p.state === "ready") {
      source.close();
      card.className = "card done";
      step.textContent = "Ready";
      location.reload();
    } else if (p.state === "failed") {
      source.close();
      card.className = "card failed";
      step.textContent = "The guest could not be started";
      error.textContent = p.error || p.step;
    }
  };
})();
</script>
</body>
</html>
""")


def render(*, name: str, host: str, state: str, step: str, error: str | None) -> str:
    return _PAGE.substitute(
        name=html.escape(name),
        host=html.escape(host),
        state=html.escape(state),
        step=html.escape(step[:1].upper() + step[1:] + "…" if step else "Starting…"),
        error=html.escape(error or ""),
        events=EVENTS_PATH,
    )
