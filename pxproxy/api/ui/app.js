/* pxproxy dashboard. Plain JS, no build step, no external assets.
 *
 * ESCAPING RULE: every value that comes from the API (guest names, tags, notes, Proxmox error
 * messages, journal lines, exec output, audit entries, token names) is put into the page with
 * textContent, createElement, setAttribute or option.text only, NEVER with innerHTML,
 * outerHTML, insertAdjacentHTML or document.write. Keep it so: the page shows what Proxmox
 * users typed, and the CSP (script-src 'self', no inline) is the second line, not the first.
 *
 * The token lives in sessionStorage only (never a URL, never a cookie) and goes out as
 * `Authorization: Bearer` on every fetch. Live updates: one GET /api/v1/events per page, read
 * with fetch() + ReadableStream (EventSource cannot send the header), parsed as SSE below.
 */
"use strict";

/* ------------------------------------------------------------------ SSE parsing (pure) */

/** Incremental parser of a text/event-stream: feed() text chunks, get whole messages. */
class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }
  reset() {
    this.event = "";
    this.data = [];
  }
  /** @returns {{event: string, data: string}[]} the messages completed by this chunk */
  feed(text) {
    this.buffer += text;
    const out = [];
    for (;;) {
      const m = /\r\n|\n|\r/.exec(this.buffer);
      // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
      if (!m || (m[0] === "\r" && m.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line, out);
    }
    return out;
  }
  line(line, out) {
    if (line === "") {
      if (this.data.length) out.push({ event: this.event || "message", data: this.data.join("\n") });
      this.reset();
      return;
    }
    if (line[0] === ":") return; // a comment: the keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    // id: and retry: are not used by this page.
  }
}

/** Split a command line into argv: whitespace separates, '...' and "..." group, \ escapes. */
function splitArgv(text) {
  const argv = [];
  let cur = "";
  let quote = "";
  let have = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = "";
      else if (c === "\\" && quote === '"' && i + 1 < text.length) cur += text[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      have = true;
    } else if (c === "\\" && i + 1 < text.length) {
      cur += text[++i];
      have = true;
    } else if (/\s/.test(c)) {
      if (have) argv.push(cur);
      cur = "";
      have = false;
    } else {
      cur += c;
      have = true;
    }
  }
  if (quote) throw new Error("unclosed quote");
  if (have) argv.push(cur);
  return argv;
}

if (typeof module !== "undefined") module.exports = { SseParser, splitArgv };

/* ------------------------------------------------------------------ the page */

if (typeof document !== "undefined") {
  const TOKEN_KEY = "pxproxy.token";
  const THEME_KEY = "pxproxy.theme";
  const SPARK_POINTS = 60;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const ROUTES_REFETCH_MS = 400;
  const WEBHOOKS_REFETCH_MS = 1000; // at most one GET /api/v1/webhooks a second, however many tries
  const RECENT_FAILURES_SHOWN = 5;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (sel) => document.querySelector(sel);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY), // null: none; "": anonymous (loopback)
    me: null,
    clusters: new Map(), // name -> {entry from /health, pollWall (client ms)}
    nodes: [],
    guests: new Map(), // ref -> guest JSON
    history: new Map(), // ref -> {cpu: [], mem: []}
    routes: [],
    routesAt: 0, // client ms when /api/v1/routes answered
    idleRefs: new Set(), // guest refs (as routes name them) with an idle route
    sort: { key: "vmid", dir: 1 },
    filter: "",
    skewMs: 0, // server clock minus ours, from the stream's hello
    stream: null, // AbortController of the events stream
    backoffMs: BACKOFF_MIN_MS,
    journal: null, // AbortController of the journal follow
    taskSeq: 0,
    routesTimer: 0,
    webhooks: [],
    webhooksAt: 0, // client ms of the last GET /api/v1/webhooks
    webhooksTimer: 0,
    pending: null, // events that came while the state was fetched (null: none is)
  };

  const can = (scope) => !!state.me && state.me.scopes.includes(scope);

  /* ---------------------------------------------------------------- small DOM helpers */

  /** An element with text content and attributes: the one way data enters the page. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "hidden") node.hidden = true;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function say(text) {
    $("#status").textContent = text;
  }

  function ageText(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "never";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  function bytes(n) {
    if (!n) return "0";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function refPath(ref) {
    // cluster:vmid; ':' is a valid path character, kept readable.
    return encodeURIComponent(ref).replace(/%3A/gi, ":");
  }

  /* ---------------------------------------------------------------- the API */

  class Unauthorized extends Error {}

  async function call(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
    const resp = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    if (resp.status === 401) {
      signOut("The token was refused (401): sign in again.");
      throw new Unauthorized("401");
    }
    return resp;
  }

  /** The problem document's detail, or the status line: the text a user needs. */
  async function problemText(resp) {
    try {
      const body = await resp.json();
      return body.detail || body.title || `HTTP ${resp.status}`;
    } catch {
      return `HTTP ${resp.status} ${resp.statusText}`;
    }
  }

  async function getJson(path) {
    const resp = await call(path);
    if (!resp.ok) throw new Error(`${path}: ${await problemText(resp)}`);
    return resp.json();
  }

  /* ---------------------------------------------------------------- sign-in */

  async function signIn(token) {
    state.token = token;
    let resp;
    try {
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      resp = await fetch("../api/v1/me", { headers, cache: "no-store", credentials: "omit" });
    } catch (err) {
      showSignIn(`Cannot reach pxproxy: ${err.message}`);
      return;
    }
    if (!resp.ok) {
      showSignIn(token ? await problemText(resp) : "");
      return;
    }
    state.me = await resp.json();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("#signin").hidden = true;
    $("#main").hidden = false;
    $("#signout").hidden = !token;
    const who = $("#whoami");
    who.hidden = false;
    who.textContent = `${state.me.name} (${state.me.scopes.join(", ")})`;
    $("#exec-pane").hidden = !can("exec");
    say(`Signed in as ${state.me.name}.`);
    // Subscribe first, fetch the state on the hello: a change between the two is then an
    // event queued behind the fetch, never one missed.
    connectStream();
  }

  function showSignIn(error) {
    state.token = null;
    state.me = null;
    $("#main").hidden = true;
    $("#signin").hidden = false;
    $("#signout").hidden = true;
    $("#whoami").hidden = true;
    $("#signin-error").textContent = error || "";
    $("#token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stream) state.stream.abort();
    if (state.journal) state.journal.abort();
    state.stream = state.journal = null;
    state.guests.clear();
    state.history.clear();
    rows.clear(); // their buttons were for this token's scopes
    $("#guests tbody").replaceChildren();
    $("#routes tbody").replaceChildren();
    $("#audit tbody").replaceChildren();
    $("#webhooks tbody").replaceChildren();
    $("#webhooks-pane").hidden = true;
    state.webhooks = [];
    $("#journal").replaceChildren();
    $("#exec-output").replaceChildren();
    $("#tasks").replaceChildren();
    $("#stream").dataset.state = "off";
    $("#stream").textContent = "offline";
    showSignIn(message);
    say(message || "Signed out.");
  }

  /* ---------------------------------------------------------------- fetching */

  async function refetchAll() {
    try {
      await Promise.all([fetchHealth(), fetchNodes(), fetchGuests(), fetchRoutes(), fetchAudit(), fetchWebhooks()]);
    } catch (err) {
      if (!(err instanceof Unauthorized)) say(`Could not load: ${err.message}`);
    }
  }

  async function fetchHealth() {
    const resp = await call("../health");
    const body = await resp.json();
    const now = Date.now();
    $("#health").dataset.state = body.status;
    $("#health").textContent = body.status;
    for (const c of body.clusters || []) {
      const age = c.last_poll_age_s;
      state.clusters.set(c.name, { ...c, pollWall: age === null ? null : now - age * 1000 });
    }
    renderClusters();
  }

  async function fetchNodes() {
    state.nodes = await getJson("../api/v1/nodes");
    renderClusters();
    renderJournalTargets();
  }

  async function fetchGuests() {
    const list = await getJson("../api/v1/guests");
    state.guests = new Map(list.map((g) => [`${g.cluster}:${g.vmid}`, g]));
    for (const [ref, g] of state.guests) pushStats(ref, g.cpu, g.mem, g.maxmem);
    renderGuests();
    renderJournalTargets();
  }

  async function fetchRoutes() {
    state.routes = await getJson("../api/v1/routes");
    state.routesAt = Date.now();
    renderRoutes();
    renderGuests(); // wake buttons follow the idle routes
  }

  function refetchRoutesSoon() {
    clearTimeout(state.routesTimer);
    state.routesTimer = setTimeout(() => fetchRoutes().catch(() => {}), ROUTES_REFETCH_MS);
  }

  async function fetchWebhooks() {
    state.webhooksAt = Date.now();
    state.webhooks = await getJson("../api/v1/webhooks");
    renderWebhooks();
  }

  /** Refetch on a `webhook` event: at once if the last fetch is a second old, else once when it
   * is (a retry storm costs one request a second, and the last try is always shown). */
  function refetchWebhooksThrottled() {
    if (state.webhooksTimer) return;
    const wait = Math.max(0, state.webhooksAt + WEBHOOKS_REFETCH_MS - Date.now());
    state.webhooksTimer = setTimeout(() => {
      state.webhooksTimer = 0;
      fetchWebhooks().catch((err) => {
        if (!(err instanceof Unauthorized)) say(`Could not load the webhooks: ${err.message}`);
      });
    }, wait);
  }

  /* ---------------------------------------------------------------- clusters and nodes */

  function renderClusters() {
    const list = $("#cluster-list");
    const items = [];
    const stale = [];
    for (const [name, c] of state.clusters) {
      const li = el("li", { "data-cluster": name, "data-state": c.state });
      li.append(
        el("h3", { text: name }),
        el("span", { class: "badge state", "data-state": c.state, text: c.state }),
        " ",
        el("span", { class: "poll-age", "data-cluster": name }),
      );
      if (c.error) li.append(el("p", { class: "error cluster-error", text: c.error }));
      const nodes = el("ul", { class: "nodes" });
      for (const n of state.nodes.filter((x) => x.cluster === name)) {
        nodes.append(
          el(
            "li",
            { "data-node": `${n.cluster}:${n.name}` },
            el("span", { class: "state", "data-state": n.status, text: n.status }),
            ` ${n.name}`,
            el("span", { class: "hint", text: n.ip ? ` ${n.ip}` : "" }),
            el("span", {
              class: "hint",
              text: n.maxmem ? ` · CPU ${(n.cpu * 100).toFixed(0)}% · mem ${bytes(n.mem)}/${bytes(n.maxmem)}` : "",
            }),
          ),
        );
      }
      li.append(nodes);
      items.push(li);
      if (c.state !== "ok") stale.push(c);
    }
    list.replaceChildren(...items);
    const warn = $("#stale");
    if (stale.length) {
      warn.hidden = false;
      warn.textContent =
        "Showing the last known state: " +
        stale.map((c) => `${c.name} is ${c.state}${c.error ? ` (${c.error})` : ""}`).join("; ");
    } else {
      warn.hidden = true;
      warn.textContent = "";
    }
    tick();
  }

  function onPoll(d) {
    const c = state.clusters.get(d.cluster) || { name: d.cluster };
    c.state = d.state;
    c.ok = d.ok;
    c.error = d.error;
    c.guests = d.guests;
    c.nodes = d.nodes;
    if (d.ok) c.pollWall = d.at * 1000 - state.skewMs;
    state.clusters.set(d.cluster, c);
    const all = [...state.clusters.values()];
    const status = all.length && all.every((x) => x.ok) ? "ok" : "degraded";
    $("#health").dataset.state = status;
    $("#health").textContent = status;
    renderClusters();
  }

  /* ---------------------------------------------------------------- guests */

  function pushStats(ref, cpu, mem, maxmem) {
    let h = state.history.get(ref);
    if (!h) state.history.set(ref, (h = { cpu: [], mem: [] }));
    h.cpu.push(Math.max(0, Math.min(1, Number(cpu) || 0)));
    h.mem.push(maxmem ? Math.max(0, Math.min(1, mem / maxmem)) : 0);
    if (h.cpu.length > SPARK_POINTS) h.cpu.shift();
    if (h.mem.length > SPARK_POINTS) h.mem.shift();
  }

  function sparkline(cls, label) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", `spark ${cls}`);
    svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS - 1} 20`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    svg.append(document.createElementNS(SVG, "polyline"));
    return svg;
  }

  function drawSpark(svg, points) {
    const start = SPARK_POINTS - points.length;
    const coords = points.map((v, i) => `${start + i},${(20 - v * 19 - 0.5).toFixed(2)}`);
    svg.firstChild.setAttribute("points", coords.join(" "));
    svg.dataset.points = String(points.length);
  }

  function guestKey(g, key) {
    switch (key) {
      case "ips":
        return (g.ips || []).join(" ");
      case "tags":
        return (g.tags || []).join(" ");
      case "cpu":
        return g.cpu || 0;
      case "mem":
        return g.maxmem ? g.mem / g.maxmem : 0;
      case "vmid":
        return g.vmid;
      default:
        return String(g[key] ?? "").toLowerCase();
    }
  }

  function matches(g, text) {
    if (!text) return true;
    const hay = [g.name, g.vmid, g.node, g.cluster, g.status, g.type, ...(g.ips || []), ...(g.tags || [])]
      .join(" ")
      .toLowerCase();
    return text
      .toLowerCase()
      .split(/\s+/)
      .every((w) => hay.includes(w));
  }

  function buildRow(ref) {
    const tr = el("tr", { "data-guest": ref });
    const cells = {
      status: el("td", { class: "status", "data-label": "Status" }),
      name: el("td", { class: "name", "data-label": "Name" }),
      vmid: el("td", { class: "vmid", "data-label": "VMID" }),
      node: el("td", { class: "node", "data-label": "Node" }),
      ips: el("td", { class: "ips", "data-label": "IPs" }),
      tags: el("td", { class: "tags", "data-label": "Tags" }),
      cpu: el("td", { class: "cpu", "data-label": "CPU" }),
      mem: el("td", { class: "mem", "data-label": "Memory" }),
      actions: el("td", { class: "actions" }),
    };
    cells.cpu.append(sparkline("spark-cpu", `CPU of ${ref}`), el("span", { class: "spark-label" }));
    cells.mem.append(sparkline("spark-mem", `memory of ${ref}`), el("span", { class: "spark-label" }));
    tr.append(...Object.values(cells));
    tr.cells_ = cells;
    return tr;
  }

  function fillRow(tr, g, ref) {
    const c = tr.cells_;
    tr.dataset.state = g.status;
    tr.classList.toggle("last-known", !!g.last_known);
    c.status.replaceChildren(el("span", { class: "state badge", "data-state": g.status, text: g.status }));
    c.name.replaceChildren(el("span", { class: "guest-name", text: g.name || g.id }));
    if (g.last_known) c.name.append(el("span", { class: "hint", text: " (node offline: last known)" }));
    c.vmid.textContent = `${g.vmid}`;
    c.node.textContent = `${g.cluster}/${g.node}`;
    c.ips.replaceChildren(
      ...(g.ips || []).flatMap((ip) => [el("span", { class: "ip", text: ip }), " "]),
      g.ips && g.ips.length ? el("span", { class: "src ip-source", text: `(${g.ip_source || "unknown"})` }) : el("span", { class: "src", text: "none" }),
    );
    c.tags.replaceChildren(...(g.tags || []).map((t) => el("span", { class: "tag", text: t })));
    // The buttons are made anew (which ones are enabled follows the status): a keyboard
    // user's focus goes to the new button of the same action, or the next enabled one.
    const focused = c.actions.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    c.actions.replaceChildren(...guestActions(g, ref));
    if (focused) {
      const buttons = [...c.actions.querySelectorAll("button")];
      const same = buttons.findIndex((b) => b.dataset.action === focused);
      const next = buttons.slice(Math.max(same, 0)).find((b) => !b.disabled) || buttons.find((b) => !b.disabled);
      if (next) next.focus();
    }
    drawStats(tr, ref, g);
  }

  function drawStats(tr, ref, g) {
    const h = state.history.get(ref) || { cpu: [], mem: [] };
    const c = tr.cells_;
    drawSpark(c.cpu.firstChild, h.cpu);
    drawSpark(c.mem.firstChild, h.mem);
    setText(c.cpu.lastChild, g.status === "running" ? `${((g.cpu || 0) * 100).toFixed(1)}%` : "");
    setText(c.mem.lastChild, g.status === "running" && g.maxmem ? `${bytes(g.mem)} / ${bytes(g.maxmem)}` : "");
  }

  /** Text that did not change is not written: each write costs the page a relayout. */
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function actionButton(action, target, label, extra = {}) {
    return el("button", { type: "button", "data-action": action, "data-target": target, text: label, ...extra });
  }

  function guestActions(g, ref) {
    const out = [];
    if (can("power")) {
      if (hasIdleRoute(g)) out.push(actionButton("wake", ref, "Wake"));
      const running = g.status === "running";
      out.push(actionButton("start", ref, "Start", { disabled: running }));
      out.push(actionButton("shutdown", ref, "Shutdown", { disabled: !running }));
      out.push(actionButton("stop", ref, "Stop", { disabled: !running }));
      out.push(actionButton("reboot", ref, "Reboot", { disabled: !running }));
    }
    if (can("exec") && g.status === "running") {
      out.push(actionButton("journal", ref, "Journal"));
      out.push(actionButton("exec", ref, "Exec"));
    }
    return out;
  }

  function hasIdleRoute(g) {
    const names = [g.name, String(g.vmid), `${g.cluster}:${g.vmid}`, `${g.node}/${g.vmid}`, g.id];
    return state.routes.some((r) => r.idle && names.includes(r.guest));
  }

  const rows = new Map(); // ref -> tr
  // Past this many changed guests in one event, one full redraw beats row-by-row placement.
  const INCREMENTAL_MAX = 64;

  /** Fill a row from its guest, unless it already shows this very object (and wake button). */
  function refreshRow(tr, g, ref) {
    const idle = hasIdleRoute(g);
    if (tr.guest_ !== g || tr.idle_ !== idle) {
      fillRow(tr, g, ref);
      tr.guest_ = g;
      tr.idle_ = idle;
    }
  }

  /** The table's order; `key_` is the sort key a row was placed with, so the rows in the table
   * stay sorted by it even while `stats` events move cpu/mem under a cpu or memory sort. */
  function rowOrder(a, b) {
    const x = a.key_;
    const y = b.key_;
    return (x < y ? -1 : x > y ? 1 : a.guest_.vmid - b.guest_.vmid) * state.sort.dir;
  }

  function showCount() {
    $("#guest-count").textContent = `${$("#guests tbody").rows.length} of ${state.guests.size}`;
  }

  /** Every row, in the current filter and sort: on a full fetch, a sort or a filter change. */
  function renderGuests() {
    const tbody = $("#guests tbody");
    for (const ref of [...rows.keys()]) {
      if (!state.guests.has(ref)) {
        rows.get(ref).remove();
        rows.delete(ref);
      }
    }
    const shown = [];
    for (const [ref, g] of state.guests) {
      let tr = rows.get(ref);
      if (!tr) rows.set(ref, (tr = buildRow(ref)));
      refreshRow(tr, g, ref);
      tr.key_ = guestKey(g, state.sort.key);
      if (matches(g, state.filter)) shown.push(tr);
    }
    shown.sort(rowOrder);
    tbody.replaceChildren(...shown);
    showCount();
  }

  /** Only the rows of these guests: removed, refilled, or put (back) in their sorted place. */
  function updateGuestRows(refs) {
    const tbody = $("#guests tbody");
    const list = tbody.rows; // live, and only ever holds shown rows in rowOrder
    for (const ref of refs) {
      const g = state.guests.get(ref);
      let tr = rows.get(ref);
      if (!g) {
        if (tr) tr.remove();
        rows.delete(ref);
        continue;
      }
      if (!tr) rows.set(ref, (tr = buildRow(ref)));
      refreshRow(tr, g, ref);
      if (!matches(g, state.filter)) {
        tr.remove();
        continue;
      }
      tr.key_ = guestKey(g, state.sort.key);
      if (tr.parentNode === tbody) {
        const prev = tr.previousElementSibling;
        const next = tr.nextElementSibling;
        if ((!prev || rowOrder(prev, tr) <= 0) && (!next || rowOrder(tr, next) <= 0)) continue; // still in place
        tr.remove();
      }
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (rowOrder(list[mid], tr) <= 0) lo = mid + 1;
        else hi = mid;
      }
      tbody.insertBefore(tr, list[lo] || null);
    }
    showCount();
  }

  function onGuests(d) {
    const refs = [];
    for (const g of d.changed || []) {
      const ref = `${g.cluster}:${g.vmid}`;
      state.guests.set(ref, g);
      refs.push(ref);
    }
    for (const ref of d.removed || []) {
      state.guests.delete(ref);
      state.history.delete(ref);
      refs.push(ref);
    }
    if (refs.length > INCREMENTAL_MAX) {
      renderGuests();
      renderJournalTargets();
    } else {
      updateGuestRows(refs);
      updateTargets(refs);
    }
  }

  /** Only sparklines and numbers: a row is never rebuilt or moved by a `stats` event. */
  function onStats(d) {
    for (const [ref, s] of Object.entries(d.guests || {})) {
      pushStats(ref, s.cpu, s.mem, s.maxmem);
      const g = state.guests.get(ref);
      const tr = rows.get(ref);
      if (g && tr) {
        const updated = { ...g, cpu: s.cpu, mem: s.mem, maxmem: s.maxmem };
        state.guests.set(ref, updated);
        tr.guest_ = updated;
        drawStats(tr, ref, updated);
      }
    }
  }

  function sortBy(key) {
    state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: 1 };
    for (const th of document.querySelectorAll("#guests thead th")) {
      const b = th.querySelector("button[data-sort]");
      if (!b) continue;
      th.setAttribute(
        "aria-sort",
        b.dataset.sort !== key ? "none" : state.sort.dir > 0 ? "ascending" : "descending",
      );
    }
    renderGuests();
  }

  /* ---------------------------------------------------------------- routes */

  function routeName(r) {
    if (r.name) return r.name;
    return r.host ? r.host.join(",") : `${r.protocol}:${r.listen}`;
  }

  function renderRoutes() {
    const tbody = $("#routes tbody");
    tbody.replaceChildren(
      ...state.routes.map((r) => {
        const name = routeName(r);
        if (r.error) {
          return el(
            "tr",
            { "data-route": `notes:${r.guest}`, class: "route-error" },
            el("td", { text: `from the notes of ${r.guest_name || r.guest}` }),
            el("td", { text: r.guest }),
            el("td", { colspan: 4, class: "error", text: r.error }),
          );
        }
        const stateCell = el("td", {}, el("span", { class: "state badge", "data-state": r.state, text: r.state }));
        stateCell.append(el("span", { class: "wake-step hint", text: r.wake_error ? ` ${r.wake_error}` : "" }));
        const actions = el("td", { class: "actions" });
        if (can("power") && r.idle) actions.append(actionButton("wake", r.guest, "Wake", { "data-route": name }));
        return el(
          "tr",
          { "data-route": name, "data-state": r.state },
          el("td", { class: "route-name", text: name }),
          el("td", { class: "route-guest", text: r.guest }),
          stateCell,
          el("td", { class: "last-activity", "data-at": r.last_activity_at ?? "" }),
          el("td", {
            class: "idle-stop",
            "data-in": r.idle_stop_in_s ?? "",
            "data-why": r.idle ? (r.busy ? "busy" : r.stopping ? "stopping" : "") : "no idle",
          }),
          actions,
        );
      }),
    );
    tick();
  }

  function onWake(d) {
    const names = new Set(d.routes || []);
    for (const tr of document.querySelectorAll("#routes tbody tr[data-route]")) {
      if (!names.has(tr.dataset.route)) continue;
      tr.dataset.state = d.state;
      const badge = tr.querySelector(".state");
      badge.dataset.state = d.state;
      badge.textContent = d.state;
      const step = d.error || (d.state === "waking" ? d.step : "");
      tr.querySelector(".wake-step").textContent = step ? ` ${step}` : "";
    }
    for (const r of state.routes) if (names.has(routeName(r))) r.state = d.state;
    if (d.state === "ready" || d.state === "asleep" || d.state === "failed") refetchRoutesSoon();
  }

  /* ---------------------------------------------------------------- webhooks */

  /** "<age> ago" of a server time, kept current by tick(). */
  function ago(at) {
    return el("span", { class: "ago", "data-at": at === null || at === undefined ? "" : String(at) });
  }

  function renderWebhooks() {
    const pane = $("#webhooks-pane");
    pane.hidden = state.webhooks.length === 0; // nothing configured: nothing to show
    pane.dataset.count = String(state.webhooks.length);
    $("#webhooks tbody").replaceChildren(
      ...state.webhooks.map((w) => {
        const failing = w.last_error_at !== null && (w.last_success_at === null || w.last_error_at > w.last_success_at);
        const lastError = el("td", { class: "last-error", "data-label": "Last error" });
        if (w.last_error) lastError.append(el("span", { class: "error", text: w.last_error }), " ", ago(w.last_error_at));
        else lastError.textContent = "–";
        const recent = el("ul", { class: "recent-failures" });
        for (const f of w.recent_failures.slice(0, RECENT_FAILURES_SHOWN)) {
          const what = `${f.event}${f.guest ? ` ${f.guest}` : ""}: ${f.error}`;
          const tries = `${f.attempts} ${f.attempts === 1 ? "try" : "tries"}`;
          recent.append(el("li", { text: `${what} (${f.status === null ? "" : `HTTP ${f.status}, `}${tries}) ` }, ago(f.at)));
        }
        return el(
          "tr",
          { "data-webhook": w.name, "data-state": failing ? "failing" : "ok" },
          el(
            "td",
            { class: "name", "data-label": "Webhook" },
            el("span", { text: w.name }),
            el("span", { class: "hint", text: ` ${w.format} → ${w.host}` }),
          ),
          el("td", { class: "delivered", "data-label": "Delivered", text: w.delivered }),
          el("td", { class: "failed", "data-label": "Failed", text: w.failed }),
          el("td", { class: "dropped", "data-label": "Dropped", text: w.dropped }),
          el("td", { class: "queued", "data-label": "Queued", text: w.queued }),
          el("td", { class: "last-success", "data-label": "Last success" }, w.last_success_at === null ? "never" : ago(w.last_success_at)),
          lastError,
          el("td", { class: "recent", "data-label": "Recent failures" }, w.recent_failures.length ? recent : "none"),
        );
      }),
    );
    tick();
  }

  /* ---------------------------------------------------------------- the ticking clock */

  function tick() {
    const now = Date.now();
    for (const span of document.querySelectorAll(".poll-age")) {
      const c = state.clusters.get(span.dataset.cluster);
      const age = c && c.pollWall !== null && c.pollWall !== undefined ? (now - c.pollWall) / 1000 : null;
      span.textContent = `last poll ${age === null ? "never" : `${ageText(age)} ago`}`;
      span.dataset.age = age === null ? "" : String(Math.round(age));
    }
    for (const td of document.querySelectorAll("#routes td.last-activity")) {
      const at = td.dataset.at;
      td.textContent = at ? `${ageText((now - (Number(at) * 1000 - state.skewMs)) / 1000)} ago` : "–";
    }
    for (const span of document.querySelectorAll("#webhooks .ago")) {
      const at = span.dataset.at;
      span.textContent = at ? `${ageText((now - (Number(at) * 1000 - state.skewMs)) / 1000)} ago` : "";
    }
    for (const td of document.querySelectorAll("#routes td.idle-stop")) {
      const left = td.dataset.in;
      if (left === "") td.textContent = td.dataset.why || "–";
      else td.textContent = ageText(Math.max(0, Number(left) - (now - state.routesAt) / 1000));
    }
  }

  /* ---------------------------------------------------------------- the events stream */

  function setStream(s, text) {
    const badge = $("#stream");
    badge.dataset.state = s;
    badge.textContent = text;
  }

  function connectStream() {
    if (state.stream) state.stream.abort();
    const ctl = new AbortController();
    state.stream = ctl;
    readStream(ctl).then(
      () => reconnect(ctl, "the stream ended"),
      (err) => {
        if (!(err instanceof Unauthorized)) reconnect(ctl, err.message || String(err));
      },
    );
  }

  async function readStream(ctl) {
    setStream("connecting", "connecting…");
    const resp = await call("../api/v1/events", { signal: ctl.signal, headers: { Accept: "text/event-stream" } });
    if (!resp.ok) throw new Error(await problemText(resp));
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const msg of parser.feed(value)) dispatch(msg);
    }
  }

  function dispatch(msg) {
    if (state.pending && msg.event !== "hello") {
      state.pending.push(msg); // the state is being fetched: applied after it
      return;
    }
    let d;
    try {
      d = JSON.parse(msg.data);
    } catch {
      return; // not ours to show
    }
    switch (msg.event) {
      case "hello":
        state.skewMs = d.server_time * 1000 - Date.now();
        state.backoffMs = BACKOFF_MIN_MS;
        setStream("live", "live");
        state.pending = [];
        refetchAll().finally(() => {
          const queued = state.pending || [];
          state.pending = null;
          queued.forEach(dispatch);
        });
        break;
      case "poll":
        onPoll(d);
        break;
      case "guests":
        onGuests(d);
        break;
      case "stats":
        onStats(d);
        break;
      case "wake":
        onWake(d);
        break;
      case "idle":
      case "routes":
        refetchRoutesSoon();
        break;
      case "webhook":
        if (!d.ok) say(`Webhook ${d.name} (${d.event}) failed, try ${d.attempt}: ${d.error || `HTTP ${d.status}`}`);
        refetchWebhooksThrottled();
        break;
      case "overflow":
        say(`Live updates fell behind (${d.reason}): reloading the state.`);
        break;
      default:
        break;
    }
  }

  function reconnect(ctl, why) {
    if (state.stream !== ctl || ctl.signal.aborted) return; // signed out, or replaced
    const wait = state.backoffMs;
    state.backoffMs = Math.min(BACKOFF_MAX_MS, state.backoffMs * 2);
    setStream("off", `reconnecting in ${Math.round(wait / 1000)}s`);
    say(`Live updates interrupted (${why}); reconnecting in ${Math.round(wait / 1000)}s.`);
    setTimeout(async () => {
      if (state.stream !== ctl) return;
      await refetchAll(); // what happened meanwhile
      if (state.stream === ctl) connectStream();
    }, wait);
  }

  /* ---------------------------------------------------------------- actions */

  function addTask(text) {
    const id = `task-${++state.taskSeq}`;
    const li = el(
      "li",
      { "data-task": id, "data-state": "pending" },
      el("span", { class: "state", "data-state": "pending", text: "pending" }),
      " ",
      el("span", { class: "what", text }),
      " ",
      el("span", { class: "detail" }),
    );
    $("#tasks").prepend(li);
    while ($("#tasks").children.length > 20) $("#tasks").lastChild.remove();
    return {
      li,
      set(s, detail) {
        li.dataset.state = s;
        const badge = li.querySelector(".state");
        badge.dataset.state = s;
        badge.textContent = s;
        li.querySelector(".detail").textContent = detail || "";
        if (s !== "pending") say(`${text}: ${s}${detail ? ` (${detail})` : ""}`);
      },
    };
  }

  async function power(action, ref) {
    const task = addTask(`${action} ${ref}`);
    try {
      const resp = await call(`../api/v1/guests/${refPath(ref)}/${action}?wait=1`, { method: "POST" });
      if (resp.ok) {
        const body = await resp.json();
        task.set("ok", `${body.exitstatus || "OK"} in ${body.duration_s ?? "?"}s`);
      } else {
        task.set("failed", await problemText(resp));
      }
    } catch (err) {
      if (!(err instanceof Unauthorized)) task.set("failed", err.message);
    }
  }

  /** Lines of an NDJSON body as they arrive. */
  async function* ndjson(resp) {
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) yield JSON.parse(line);
      }
    }
    if (buf.trim()) yield JSON.parse(buf);
  }

  async function wake(ref) {
    const task = addTask(`wake ${ref}`);
    try {
      const resp = await call(`../api/v1/guests/${refPath(ref)}/wake`, { method: "POST" });
      if (!resp.ok) {
        task.set("failed", await problemText(resp));
        return;
      }
      let last = null;
      for await (const line of ndjson(resp)) {
        last = line;
        if (line.state === "ready") task.set("ok", line.already_ready ? "already ready" : `ready in ${line.elapsed_s}s`);
        else if (line.state === "failed") task.set("failed", line.error || line.step);
        else task.set("pending", `${line.step} (${line.elapsed_s}s)`);
      }
      if (!last || (last.state !== "ready" && last.state !== "failed")) task.set("failed", "the answer ended early");
    } catch (err) {
      if (!(err instanceof Unauthorized)) task.set("failed", err.message);
    }
  }

  /* ---------------------------------------------------------------- journal */

  const journalOpts = new Map(); // ref -> <option> of a running guest in #journal-target
  const execOpts = new Map(); // ref -> <option> in #exec-guest

  function selectOption(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.text = text;
    return o;
  }

  function renderJournalTargets() {
    const select = $("#journal-target");
    const keep = select.value;
    const options = state.nodes.map((n) => selectOption(`node:${n.cluster}:${n.name}`, `node ${n.cluster}/${n.name}`));
    journalOpts.clear();
    if (can("exec")) {
      for (const [ref, g] of state.guests) {
        if (g.status !== "running") continue;
        const o = selectOption(`guest:${ref}`, `guest ${ref} ${g.name}`);
        journalOpts.set(ref, o);
        options.push(o);
      }
    }
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
    renderExecTargets();
  }

  /** Keep one guest's option in a select of running guests, in the guests' order (after the nodes). */
  function placeOption(select, opts, ref, value, text) {
    const g = state.guests.get(ref);
    let o = opts.get(ref);
    if (!g || g.status !== "running") {
      if (o) o.remove();
      opts.delete(ref);
      return;
    }
    if (o) {
      if (o.text !== text) o.text = text;
      return;
    }
    opts.set(ref, (o = selectOption(value, text)));
    // Before the option of the next running guest in the guests' order, else last.
    let after = false;
    let next = null;
    for (const r of state.guests.keys()) {
      if (r === ref) after = true;
      else if (after && opts.has(r)) {
        next = opts.get(r);
        break;
      }
    }
    select.insertBefore(o, next);
  }

  /** The journal and exec selects for these guests only (a `guests` event). */
  function updateTargets(refs) {
    for (const ref of refs) {
      const name = state.guests.get(ref)?.name;
      if (can("exec")) placeOption($("#journal-target"), journalOpts, ref, `guest:${ref}`, `guest ${ref} ${name}`);
      placeOption($("#exec-guest"), execOpts, ref, ref, `${ref} ${name}`);
    }
  }

  function journalPath(target) {
    if (target.startsWith("node:")) {
      const [cluster, node] = target.slice(5).split(/:(.*)/s);
      return `../journal/${encodeURIComponent(`${cluster}:${node}`)}?limit=100&follow=1`;
    }
    const g = state.guests.get(target.slice(6));
    if (!g) return null;
    // QEMU guests answer through the guest agent, which cannot follow.
    const follow = g.type === "qemu" ? 0 : 1;
    return `../journal/${encodeURIComponent(`${g.cluster}:${g.node}`)}/${g.vmid}?limit=100&follow=${follow}`;
  }

  async function followJournal(target) {
    stopJournal();
    const path = journalPath(target);
    if (!path) return;
    const ctl = new AbortController();
    state.journal = ctl;
    const pre = $("#journal");
    pre.replaceChildren();
    $("#journal-stop").disabled = false;
    $("#journal-state").textContent = `following ${target.replace(/^\w+:/, "")}…`;
    try {
      const resp = await call(path, { signal: ctl.signal });
      if (!resp.ok) {
        $("#journal-state").textContent = `refused: ${await problemText(resp)}`;
        return;
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pre.append(document.createTextNode(value)); // text, never markup
        // Bounded: the oldest text goes once the pane holds much.
        while (pre.childNodes.length > 2000) pre.firstChild.remove();
        pre.scrollTop = pre.scrollHeight;
      }
      if (state.journal === ctl) $("#journal-state").textContent = "the journal ended";
    } catch (err) {
      // Stopped by the button (nothing follows now), or replaced by another target (say nothing).
      if (ctl.signal.aborted) {
        if (state.journal === null) $("#journal-state").textContent = "stopped";
      } else if (!(err instanceof Unauthorized) && state.journal === ctl) {
        $("#journal-state").textContent = `ended: ${err.message}`;
      }
    } finally {
      if (state.journal === ctl) {
        state.journal = null;
        $("#journal-stop").disabled = true;
      }
    }
  }

  function stopJournal() {
    if (state.journal) state.journal.abort();
    state.journal = null;
    $("#journal-stop").disabled = true;
  }

  /* ---------------------------------------------------------------- exec */

  function renderExecTargets() {
    const select = $("#exec-guest");
    const keep = select.value;
    const options = [];
    execOpts.clear();
    for (const [ref, g] of state.guests) {
      if (g.status !== "running") continue;
      const o = selectOption(ref, `${ref} ${g.name}`);
      execOpts.set(ref, o);
      options.push(o);
    }
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }

  async function runExec(ref, text) {
    const out = $("#exec-output");
    const status = $("#exec-status");
    out.replaceChildren();
    let argv;
    try {
      argv = splitArgv(text);
    } catch (err) {
      status.textContent = `Cannot run: ${err.message}`;
      return;
    }
    if (!argv.length) return;
    const g = state.guests.get(ref);
    if (!g) return;
    status.dataset.state = "pending";
    status.textContent = `running ${JSON.stringify(argv)} in ${ref}…`;
    try {
      const path = `../exec/${encodeURIComponent(`${g.cluster}:${g.node}`)}/${g.vmid}?format=json`;
      const resp = await call(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ argv }),
      });
      if (!resp.ok) {
        status.dataset.state = "failed";
        status.textContent = `refused: ${await problemText(resp)}`;
        return;
      }
      for await (const line of ndjson(resp)) {
        if (line.output !== undefined) out.append(document.createTextNode(line.output));
        else if (line.exit_status !== undefined) {
          status.dataset.state = line.exit_status === 0 ? "ok" : "failed";
          status.textContent = `exit status ${line.exit_status} after ${line.duration_s}s`;
        } else if (line.error !== undefined) {
          status.dataset.state = "failed";
          status.textContent = `error: ${line.error}`;
        }
      }
    } catch (err) {
      if (!(err instanceof Unauthorized)) {
        status.dataset.state = "failed";
        status.textContent = `failed: ${err.message}`;
      }
    }
  }

  /* ---------------------------------------------------------------- audit */

  async function fetchAudit() {
    const body = await getJson("../api/v1/audit?limit=100");
    const chain = body.chain;
    const badge = $("#audit-badge");
    badge.dataset.chain = chain.state;
    badge.textContent = { ok: "chain verified", broken: "chain BROKEN", unchained: "not chained", unreadable: "unreadable" }[chain.state] || chain.state;
    $("#audit-chain").textContent =
      chain.state === "ok"
        ? `${chain.file}: ${chain.lines} lines verified, head seq ${chain.head.seq}`
        : chain.error || "";
    $("#audit tbody").replaceChildren(
      ...body.entries.map((e) =>
        el(
          "tr",
          { "data-audit-result": e.result.split(":")[0] },
          el("td", { text: new Date(e.at * 1000).toLocaleString() }),
          el("td", { text: e.token }),
          el("td", { text: e.detail && e.detail.argv ? `${e.action} ${JSON.stringify(e.detail.argv)}` : e.action }),
          el("td", { text: e.guest }),
          el("td", { text: `${e.result}${e.duration_s ? ` (${e.duration_s}s)` : ""}` }),
        ),
      ),
    );
  }

  /* ---------------------------------------------------------------- theme */

  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
    const b = $("#theme-toggle");
    b.textContent = `Theme: ${theme || "auto"}`;
    b.setAttribute("aria-pressed", theme ? "true" : "false");
  }

  /* ---------------------------------------------------------------- wiring */

  document.addEventListener("DOMContentLoaded", () => {
    applyTheme(localStorage.getItem(THEME_KEY));
    $("#theme-toggle").addEventListener("click", () => {
      const order = [null, "dark", "light"];
      const cur = localStorage.getItem(THEME_KEY);
      const next = order[(order.indexOf(cur) + 1) % order.length];
      if (next) localStorage.setItem(THEME_KEY, next);
      else localStorage.removeItem(THEME_KEY);
      applyTheme(next);
    });
    $("#signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("#token").value.trim();
      $("#token").value = "";
      if (token) signIn(token);
    });
    $("#signout").addEventListener("click", () => signOut("Signed out."));
    $("#guest-filter").addEventListener("input", (ev) => {
      state.filter = ev.target.value.trim();
      renderGuests();
    });
    for (const b of document.querySelectorAll("#guests thead button[data-sort]")) {
      // A real button: click, Enter and Space all sort.
      b.addEventListener("click", () => sortBy(b.dataset.sort));
    }
    document.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action]");
      if (!b || b.disabled) return;
      const { action, target } = b.dataset;
      if (action === "wake") wake(target);
      else if (action === "journal") {
        $("#journal-target").value = `guest:${target}`;
        followJournal(`guest:${target}`);
        $("#journal-pane").scrollIntoView();
      } else if (action === "exec") {
        $("#exec-guest").value = target;
        $("#exec-argv").focus();
      } else power(action, target);
    });
    $("#journal-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      if ($("#journal-target").value) followJournal($("#journal-target").value);
    });
    $("#journal-stop").addEventListener("click", stopJournal);
    $("#exec-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      runExec($("#exec-guest").value, $("#exec-argv").value);
    });
    $("#audit-refresh").addEventListener("click", () => fetchAudit().catch((err) => say(err.message)));
    setInterval(tick, 1000);
    // A stored token, else try without one (a loopback API without api.tokens answers).
    signIn(state.token || "");
  });
}
