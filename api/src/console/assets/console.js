// surge console: polls the JSON under /admin/api/ and writes text into the page (never
// markup). No framework, no build step. Every POST carries the session's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const pages = ["overview", "merchants", "lookup", "dead-letters", "load-runs"];
let timer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c === null || c === undefined ? "" : (c instanceof Node ? c : String(c)));
  return e;
}

function say(text) { document.getElementById("status").textContent = text; }

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.method === "POST") opts.headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, opts);
  if (res.status === 401) { location.href = "/admin"; throw new Error("signed out"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.code || res.status) + ": " + (body.detail || res.statusText));
  return body;
}

function fill(tableId, rows) {
  const tbody = document.querySelector("#" + tableId + " tbody");
  tbody.replaceChildren(...rows);
  if (rows.length === 0) {
    const cols = document.querySelectorAll("#" + tableId + " th").length;
    tbody.append(el("tr", {}, el("td", { colspan: String(cols) }, "none")));
  }
}

const fmt = (v, digits) => v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(digits === undefined ? 1 : digits) : String(v));
const when = ms => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";

// ---- overview ----
function card(id, label, value, state) {
  // state: "ok" | "bad" | undefined; the value itself says it in words.
  return el("div", { class: "card " + (state || ""), id: "card-" + id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
}

function chart(id, label, series, second) {
  const w = 300, h = 60;
  const all = series.concat(second || []).filter(v => v !== null);
  const max = Math.max(1e-9, ...all);
  const points = s => s.map((v, i) => (i * w / Math.max(1, s.length - 1)).toFixed(1) + "," + (h - 2 - (v === null ? 0 : v) / max * (h - 4)).toFixed(1)).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const last = series.length ? series[series.length - 1] : null;
  svg.setAttribute("aria-label", label + ", latest " + fmt(last, 2) + ", max " + fmt(max, 2));
  for (const [s, cls] of [[series, ""], [second, "second"]]) {
    if (!s || s.length < 2) continue;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points(s));
    if (cls) line.setAttribute("class", cls);
    svg.append(line);
  }
  return el("div", { class: "chart", id: "chart-" + id }, el("div", { class: "label" }, label + ": " + fmt(last, 2) + " (max " + fmt(max === 1e-9 ? 0 : max, 2) + ")"), svg);
}

async function overview() {
  const o = await api("/admin/api/overview");
  const total = Object.fromEntries(o.orders_total);
  const st = o.storage || {};
  const rate = o.payment_success_rate;
  const w = o.last_minute;
  const gw = o.gateway;
  const openBreakers = gw ? gw.breakers.filter(b => b[1] !== "closed").length : 0;
  document.getElementById("cards").replaceChildren(
    card("ready", "Ready", o.ready ? "✓ ready" : "✗ NOT READY", o.ready ? "ok" : "bad"),
    card("storage", "Storage", st.healthy ? "✓ writable" : "✗ FAILING" + (st.last_failure ? ": " + st.last_failure : ""), st.healthy ? "ok" : "bad"),
    card("orders-created", "Orders created (total)", String(total.created || 0)),
    card("orders-paid", "Orders paid (total)", String(total.paid || 0)),
    card("orders-per-s", "Orders/s created · paid (1 min)", fmt(w.orders_created_per_s) + " · " + fmt(w.orders_paid_per_s)),
    card("success-rate", "Payment success (1 min)", rate === null ? "– nothing settled" : (rate * 100).toFixed(1) + "%", rate !== null && rate < 0.95 ? "bad" : undefined),
    card("latency", "POST /v1/orders p50 / p99 (ms)", fmt(w.order_post_p50_ms, 2) + " / " + fmt(w.order_post_p99_ms, 2)),
    card("group-commit", "Group commit (records) · fsync p99 (ms)", fmt(w.group_commit_records) + " · " + fmt(w.fsync_p99_ms, 2)),
    card("log", "Durable LSN · queued", fmt(st.durable_lsn, 0) + " · " + fmt(st.queued_records, 0)),
    card("pending", "Card payments pending", gw ? fmt(gw.payments_pending, 0) + (gw.oldest_pending_s ? " (oldest " + fmt(gw.oldest_pending_s) + " s)" : "") : "– no gateway"),
    card("dead-letters", "Dead letters open", o.dead_letters_open === null ? "– no gateway" : String(o.dead_letters_open), o.dead_letters_open > 0 ? "bad" : undefined),
    card("breakers", "Gateway breakers open", gw ? String(openBreakers) : "– no gateway", openBreakers > 0 ? "bad" : undefined),
    card("merchants", "Merchants · shards", fmt(st.merchants, 0) + " · " + fmt(st.shards, 0)),
    card("http", "HTTP 4xx · 5xx (total)", o.http_by_class[3] + " · " + o.http_by_class[4], o.http_by_class[4] > 0 ? "bad" : undefined),
  );
  const s = o.samples;
  const col = f => s.map(f);
  document.getElementById("charts").replaceChildren(
    chart("orders", "Orders/s created (solid) · paid (dashed)", col(x => x.orders_per_s[0]), col(x => x.orders_per_s[1])),
    chart("payments", "Payments/s succeeded (solid) · failed (dashed)", col(x => x.payments_succeeded_per_s), col(x => x.payments_failed_per_s)),
    chart("latency", "POST /v1/orders p99 (solid) · p50 (dashed), ms", col(x => x.order_post_p99_ms), col(x => x.order_post_p50_ms)),
    chart("fsync", "fsync p99, ms", col(x => x.fsync_p99_ms)),
    chart("group", "Records per group commit", col(x => x.group_commit_records)),
  );
  fill("relay", o.relay.map(r => el("tr", {}, el("td", {}, r.name), el("td", {}, r.lag_records), el("td", {}, fmt(r.lag_seconds)),
    el("td", { class: r.breaker === "closed" && !r.stopped ? "ok" : "bad" }, (r.stopped ? "✗ STOPPED, " : "") + (r.breaker === "closed" ? "✓ closed" : "✗ " + r.breaker.toUpperCase())))));
  fill("gateways", (gw ? gw.breakers : []).map(([name, state]) => el("tr", {}, el("td", {}, name),
    el("td", { class: state === "closed" ? "ok" : "bad" }, state === "closed" ? "✓ closed" : "✗ " + state.toUpperCase()))));
  say("Updated " + when(o.at_ms) + (o.samples.length ? "" : " (charts fill in once a second)"));
}

// ---- merchants ----
function showSecret(text) {
  const p = document.getElementById("merchant-secret");
  p.textContent = text;
  p.hidden = false;
}

async function merchants() {
  const m = await api("/admin/api/merchants");
  fill("merchants", m.merchants.map(x => el("tr", { "data-merchant": x.id }, el("td", {}, x.id), el("td", {}, x.name), el("td", {}, x.currency), el("td", {}, x.created_at),
    el("td", {}, el("button", { class: "rotate", onclick: () => rotate(x.id) }, "Rotate key")))));
  say(m.merchants.length + " merchants" + (m.truncated ? " (first 1000)" : "") + (m.note ? ". " + m.note : ""));
}

async function rotate(id) {
  if (!confirm("Replace the API key of " + id + "? The current key stops working at once.")) return;
  const m = await api("/admin/api/merchants/" + encodeURIComponent(id) + "/rotate-key", { method: "POST" });
  showSecret("New API key of " + m.id + " (shown once, copy it now): " + m.api_key);
}

async function createMerchant(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = JSON.stringify({ id: f.get("id"), name: f.get("name"), currency: f.get("currency") });
  const m = await api("/admin/api/merchants", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  showSecret("Created " + m.id + ". Its API key (shown once, copy it now): " + m.api_key);
  await merchants();
}

// ---- look-up ----
async function lookup(ev) {
  ev.preventDefault();
  const id = document.getElementById("lookup-id").value.trim();
  const r = await api("/admin/api/lookup?id=" + encodeURIComponent(id));
  const out = document.getElementById("lookup-result");
  const parts = [];
  if (r.note) parts.push(el("p", {}, r.note));
  if (r.found.length === 0) parts.push(el("p", { id: "lookup-none" }, "No merchant has " + r.kind + " " + r.id + " in memory (archived ones are answered by GET /v1/" + r.kind + "s/{id} with the merchant's key)."));
  for (const f of r.found) {
    const rows = f.history.map(e => el("tr", {}, el("td", {}, e.lsn), el("td", {}, e.occurred_at), el("td", {}, e.type), el("td", {}, e.aggregate_id), el("td", {}, el("code", {}, JSON.stringify(e.data)))));
    const table = el("table", { class: "history" }, el("thead", {}, el("tr", {}, ...["LSN", "At", "Event", "Aggregate", "Data"].map(h => el("th", {}, h)))), el("tbody", {}, ...rows));
    parts.push(el("h3", {}, "Merchant " + f.merchant_id + ": " + r.kind + " " + r.id + " is " + (f.current.status || "?")),
      el("pre", { class: "current" }, JSON.stringify(f.current, null, 2)), el("h3", {}, "History (" + f.history.length + " events)"), table);
  }
  if (r.history_scan) {
    const sc = r.history_scan;
    parts.push(el("p", {}, "History read from the log, LSN " + sc.from_lsn + " to " + sc.to_lsn + " (" + sc.records_read + " records)" + (sc.incomplete ? "; incomplete: " + sc.incomplete : "") + "."));
  }
  out.replaceChildren(...parts);
  say("Looked up " + r.id);
}

// ---- dead letters ----
async function deadLetters() {
  const status = document.getElementById("dead-letter-status").value;
  const r = await api("/admin/api/dead-letters?status=" + encodeURIComponent(status));
  document.getElementById("dead-letter-note").textContent = r.gateway ? (r.note || "") : "No payment gateway is configured: there are no dead letters.";
  fill("dead-letters", r.dead_letters.map(d => el("tr", { "data-dead-letter": d.merchant_id + ":" + d.id },
    el("td", {}, d.merchant_id + ":" + d.id), el("td", {}, d.payment_id), el("td", {}, d.op), el("td", {}, d.amount),
    el("td", { class: d.status === "open" ? "bad" : "ok" }, d.status), el("td", {}, d.attempts), el("td", {}, d.reason),
    el("td", {}, d.status === "open" ? el("button", { class: "retry", onclick: () => retry(d.merchant_id + ":" + d.id) }, "Retry") : ""))));
  say(r.dead_letters.length + " dead letters (" + status + ")");
}

async function retry(id) {
  const d = await api("/admin/api/dead-letters/" + encodeURIComponent(id) + "/retry", { method: "POST" });
  say("Retrying " + id + ": now " + d.status);
  await deadLetters();
}

// ---- load runs ----
async function loadRuns() {
  const r = await api("/admin/api/load-runs");
  document.getElementById("load-runs-dir").textContent = "From " + r.dir + (r.unreadable.length ? "; unreadable: " + r.unreadable.map(u => u[0] + " (" + u[1] + ")").join(", ") : "");
  fill("load-runs", r.runs.map(x => el("tr", {},
    el("td", {}, (x.scenario || x.file) + (x.started_unix_s ? " · " + when(x.started_unix_s * 1000) : "") + (x.mode ? " · " + x.mode : "")),
    el("td", { class: x.verdict === "pass" ? "ok" : "bad" }, x.verdict === "pass" ? "✓ PASS" : x.verdict === "fail" ? "✗ FAIL" : "? " + (x.verdict || "unknown").toUpperCase()),
    el("td", {}, fmt(x.ops_per_s, 0)),
    el("td", {}, fmt(x.p50_ms, 2) + " / " + fmt(x.p99_ms, 2) + " / " + fmt(x.p999_ms, 2)),
    el("td", {}, fmt(x.failed_ops, 0) + " of " + fmt(x.ops, 0)),
    el("td", {}, el("ul", {}, ...x.checks.map(c => el("li", { class: c.pass ? "ok" : "bad" }, (c.pass ? "✓ " : "✗ ") + c.name + ": " + c.detail)))),
    el("td", {}, x.report ? el("a", { href: "/admin/load-runs/" + encodeURIComponent(x.report), target: "_blank", rel: "noopener" }, "report") : "–"))));
  say(r.runs.length + " load runs");
}

// ---- pages ----
const refresh = { "overview": [overview, 1000], "merchants": [merchants, 0], "lookup": [null, 0], "dead-letters": [deadLetters, 2000], "load-runs": [loadRuns, 0] };

function show() {
  const page = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
  for (const p of pages) {
    document.getElementById("page-" + p).hidden = p !== page;
    document.getElementById("nav-" + p).classList.toggle("current", p === page);
  }
  clearInterval(timer);
  const [load, every] = refresh[page];
  if (!load) return;
  const run = () => load().catch(e => say("Error: " + e.message));
  run();
  if (every) timer = setInterval(run, every);
}

function guarded(f) { return ev => f(ev).catch(e => say("Error: " + e.message)); }

document.getElementById("merchant-form").addEventListener("submit", guarded(createMerchant));
document.getElementById("lookup-form").addEventListener("submit", guarded(lookup));
document.getElementById("dead-letter-status").addEventListener("change", () => deadLetters().catch(e => say("Error: " + e.message)));
window.addEventListener("hashchange", show);
show();
