"""The built-in themes of the loading and error pages: stylesheets only, no assets.

Every theme styles the same markup (pages/document.py) and follows the browser's light or
dark preference, except where its look is one of them by design (midnight is dark, paper is
light; both still honour `prefers-reduced-motion`). `--accent` is the route's colour.
"""

from __future__ import annotations

from typing import Literal

ThemeName = Literal["default", "midnight", "paper"]
THEMES: tuple[ThemeName, ...] = ("default", "midnight", "paper")
DEFAULT_ACCENT = "#e57000"

# What every theme shares: layout, the stage list, the spinner, the states.
_BASE = """
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: grid; place-items: center;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--fg); }
.card { width: min(30rem, calc(100vw - 2rem)); padding: 2rem 2.25rem; text-align: center;
  background: var(--card); border-radius: var(--radius); box-shadow: var(--shadow);
  border: var(--border); }
.logo { max-width: 8rem; max-height: 4rem; margin: 0 auto .5rem; display: block; }
.logo[src=""] { display: none; }
h1 { font-size: 1.3rem; margin: 1rem 0 .25rem; font-weight: 600; }
.host { opacity: .65; font-size: .9rem; word-break: break-all; }
.step { margin-top: 1rem; font-weight: 500; }
.spinner { width: 44px; height: 44px; margin: 0 auto; border-radius: 50%;
  border: 4px solid var(--track); border-top-color: var(--accent);
  animation: spin .9s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { .spinner { animation-duration: 3s; } }
#stages { list-style: none; padding: 0; margin: 1.25rem auto 0; text-align: left;
  display: inline-block; }
#stages li { padding: .15rem 0 .15rem 1.6rem; position: relative; opacity: .55; }
#stages li::before { content: "○"; position: absolute; left: 0; }
#stages li.done { opacity: .8; }
#stages li.done::before { content: "✓"; color: var(--ok); }
#stages li.current { opacity: 1; font-weight: 600; }
#stages li.current::before { content: "●"; color: var(--accent); }
#stages li.failed { opacity: 1; color: var(--bad); font-weight: 600; }
#stages li.failed::before { content: "✕"; color: var(--bad); }
.meta { margin-top: 1rem; font-size: .85rem; opacity: .7; display: flex; gap: 1rem;
  justify-content: center; flex-wrap: wrap; }
#heartbeat::before { content: ""; display: inline-block; width: .5rem; height: .5rem;
  margin-right: .35rem; border-radius: 50%; background: var(--track); vertical-align: middle; }
#heartbeat.alive::before { background: var(--ok); }
#heartbeat.lost::before { background: var(--bad); }
#error { margin-top: 1rem; padding: .75rem 1rem; border-radius: 8px; text-align: left;
  background: var(--bad-bg); color: var(--bad); white-space: pre-wrap; word-break: break-word;
  font: .85rem/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
#error:empty { display: none; }
#retry { display: none; margin-top: 1.25rem; padding: .5rem 1.25rem; border: 0;
  border-radius: 8px; background: var(--accent); color: var(--on-accent); font: inherit;
  cursor: pointer; }
[data-state="ready"] .spinner { animation: none; border-color: var(--ok); }
[data-state="failed"] .spinner, [data-page="error"] .spinner { animation: none;
  border-color: var(--bad); }
[data-state="failed"] #retry, [data-page="error"] #retry { display: inline-block; }
[data-state="failed"] .meta { display: none; }
[data-page="error"] #stages, [data-page="error"] .meta, [data-page="error"] .step {
  display: none; }
.status { font-size: 2.5rem; font-weight: 700; color: var(--accent); margin: 0; }
[data-page="loading"] .status { display: none; }
[data-page="error"] .spinner { display: none; }
"""

_LIGHT = """--bg: #f4f5f7; --fg: #1d2330; --card: #fff; --track: rgba(128, 128, 128, .25);
  --ok: #2e9e5b; --bad: #c62828; --bad-bg: rgba(198, 40, 40, .1); --on-accent: #fff;"""
_DARK = """--bg: #14171c; --fg: #e6e8ec; --card: #1e232b; --track: rgba(160, 160, 160, .25);
  --ok: #4cc38a; --bad: #ff6b6b; --bad-bg: rgba(255, 107, 107, .12); --on-accent: #fff;"""

_THEMES: dict[ThemeName, str] = {
    # Light or dark as the browser prefers.
    "default": f"""
:root {{ color-scheme: light dark; {_LIGHT}
  --radius: 14px; --shadow: 0 10px 30px rgba(20, 30, 50, .08); --border: 0; }}
@media (prefers-color-scheme: dark) {{ :root {{ {_DARK} --shadow: none; }} }}
""",
    # Dark always, a glow around the card; a light variant only in the card's contrast.
    "midnight": """
:root { color-scheme: dark; --bg: radial-gradient(circle at 50% 20%, #1b2140, #07080f 70%);
  --fg: #dfe4ff; --card: rgba(20, 24, 48, .85); --track: rgba(140, 150, 255, .2);
  --ok: #59e0a8; --bad: #ff7a90; --bad-bg: rgba(255, 122, 144, .12); --on-accent: #07080f;
  --radius: 18px; --shadow: 0 0 60px rgba(120, 130, 255, .18);
  --border: 1px solid rgba(140, 150, 255, .25); }
body { background-attachment: fixed; }
h1 { letter-spacing: .02em; }
@media (prefers-color-scheme: light) { :root { --card: rgba(28, 33, 64, .95); } }
""",
    # Paper: serif type, flat card, ink colours; dark mode dims the paper.
    "paper": f"""
:root {{ color-scheme: light dark; {_LIGHT} --bg: #efe9dc; --card: #fffdf7; --fg: #2b2620;
  --radius: 2px; --shadow: 0 1px 0 rgba(0, 0, 0, .15); --border: 1px solid #d8cfbd; }}
body {{ font-family: Georgia, "Iowan Old Style", "Times New Roman", serif; }}
@media (prefers-color-scheme: dark) {{ :root {{ {_DARK} --bg: #22201c; --card: #2c2924;
  --fg: #ece4d4; --border: 1px solid #4a443a; }} }}
""",
}


def theme_css(theme: ThemeName, accent: str | None) -> str:
    """The stylesheet of `theme` with `accent` (a validated CSS colour) as --accent."""
    return f":root {{ --accent: {accent or DEFAULT_ACCENT}; }}\n{_THEMES[theme]}{_BASE}"


# Our own stylesheets never hold what would end a <style> element.
assert all("<" not in css for css in (*_THEMES.values(), _BASE))
