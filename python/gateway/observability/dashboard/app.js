// The gateway's dashboard: one JSON summary polled every few seconds, drawn as tables and SVG charts.
// No library and no network access beyond the gateway itself.
"use strict";

const state = { range: "15m", key: sessionStorage.getItem("gateway-dashboard-key") || "", timer: null, report: "daily" };
const $ = (sel) => document.querySelector(sel);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function fmt(v, digits) {
  if (v == null) return "–";
  if (typeof v !== "number") return String(v);
  if (digits != null) return v.toFixed(digits);
  if (Math.abs(v) >= 1000) return v.toLocaleString("en", { maximumFractionDigits: 0 });
  return String(Math.round(v * 1000) / 1000);
}

function usd(v) {
  return v == null ? "–" : v >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

function table(cols, rows) {
  const head = el("tr", {}, ...cols.map((c) => el("th", {}, c)));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, c)))))));
}

function fill(name, content, hasData) {
  const panel = document.querySelector(`[data-panel="${name}"]`);
  const body = panel.querySelector(".body");
  body.replaceChildren(...(Array.isArray(content) ? content : [content]));
  panel.dataset.state = hasData ? "ready" : "empty";
}

function empty(text) { return el("p", { class: "empty" }, text || "no data in this range"); }

// A line chart of several series over time, in SVG.
function lineChart(points, series, height, width) {
  const W = Math.max(300, width || 900), H = height || 160, P = 28;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", H);
  const ts = points.map((p) => p.t);
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  const max = Math.max(1e-9, ...series.flatMap((s) => points.map((p) => p[s.key] || 0)));
  const x = (t) => P + ((t - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P + 8 - (v / max) * (H - P - 8);
  series.forEach((s, i) => {
    const path = document.createElementNS(NS, "polyline");
    path.setAttribute("points", points.map((p) => `${x(p.t).toFixed(1)},${y(p[s.key] || 0).toFixed(1)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", COLORS[i % COLORS.length]);
    path.setAttribute("stroke-width", "1.6");
    svg.append(path);
  });
  const label = (text, lx, ly, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", lx); t.setAttribute("y", ly); t.setAttribute("text-anchor", anchor || "start");
    t.textContent = text; svg.append(t);
  };
  label(fmt(max), 2, 12);
  label(new Date(t0 * 1000).toLocaleTimeString(), P, H - 2);
  label(new Date(t1 * 1000).toLocaleTimeString(), W - P, H - 2, "end");
  const legend = el("div", { class: "legend" }, ...series.map((s, i) => el("span", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }), s.label)));
  return [svg, legend];
}

function quantileTable(rows) {
  if (!rows || !rows.length) return [empty(), false];
  return [table(["", "n", "p50", "p95", "p99"], rows.map((r) => [r.name, r.n, fmt(r.p50, 1), fmt(r.p95, 1), fmt(r.p99, 1)])), true];
}

function bar(fraction, over) {
  return el("div", { class: over ? "bar over" : "bar", style: `width:${Math.max(2, Math.min(100, fraction * 100)).toFixed(0)}%` });
}

function draw(s) {
  const series = s.summary.series;
  const width = document.querySelector('[data-panel="traffic"] .body').clientWidth;
  fill("traffic", series.length ? lineChart(series, [{ key: "rps", label: "requests/s" }, { key: "errors", label: "errors/s" }], 160, width) : empty(), series.length > 0);
  fill("usage", series.length ? [
    ...lineChart(series, [{ key: "tokens_in", label: "input tokens" }, { key: "tokens_out", label: "output tokens" }], 120, width),
    ...lineChart(series, [{ key: "cost", label: "cost (USD)" }], 100, width),
  ] : empty(), series.length > 0);

  const lat = s.summary.latency;
  for (const [panel, key] of [["latency-model", "model"], ["latency-provider", "provider"], ["latency-category", "category"], ["overhead", "overhead"], ["ttft", "ttft"]]) {
    const [node, ok] = quantileTable(lat[key]);
    fill(panel, node, ok);
  }

  const alerts = s.alerts.filter((a) => a.state === "firing");
  fill("alerts", alerts.length
    ? table(["tier", "signal", "subject", "since"], alerts.map((a) => [el("span", { class: `tier${a.tier}` }, `tier ${a.tier}`), a.signal, a.subject, new Date(a.started_at * 1000).toLocaleTimeString()]))
    : [el("p", { class: "ok" }, "No alert firing."), el("p", { class: "muted" }, `${s.alerts.length} raised and resolved in this range`)], true);

  const lv = s.live;
  fill("live", table(["", ""], [
    ["workers", fmt(lv.workers)], ["requests since start", fmt(lv.requests_total)], ["upstream in flight", fmt(lv.inflight)],
    ["rate-limit queue", fmt(lv.queue_depth)], ["record backlog", fmt(lv.record_backlog)], ["open circuits", fmt(lv.open_circuits)],
  ]), lv.workers > 0);

  const spendRows = [];
  for (const [scope, rows] of Object.entries(s.summary.spend)) for (const r of rows.slice(0, 5)) spendRows.push([scope, r.id, r.requests, fmt(r.usd, 4)]);
  fill("spend", spendRows.length ? table(["scope", "id", "requests", "usd"], spendRows) : empty(), spendRows.length > 0);

  const budgets = s.summary.budgets;
  fill("budgets", budgets.length ? table(["scope", "id", "spent / limit", ""], budgets.map((b) => [b.scope, b.id, `$${usd(b.spent_usd)} / $${usd(b.limit_usd)}`, bar(b.spent_usd / (b.limit_usd || 1), b.spent_usd >= b.limit_usd)])) : empty("no budget configured"), budgets.length > 0);

  const routing = s.summary.routing;
  const totals = {};
  for (const r of routing) totals[r.group] = (totals[r.group] || 0) + r.requests;
  fill("routing", routing.length ? table(["group", "deployment", "share", ""], routing.map((r) => [r.group, r.deployment, `${((100 * r.requests) / totals[r.group]).toFixed(0)}%`, bar(r.requests / totals[r.group])])) : empty(), routing.length > 0);

  const circuits = lv.circuits || [];
  const failRows = routing.filter((r) => r.failover > 0).map((r) => ["failover", `${r.group} → ${r.deployment}`, r.failover]);
  for (const c of circuits.filter((c) => c.state !== "closed")) failRows.push(["circuit", c.deployment, c.state]);
  for (const d of lv.cooling_down || []) failRows.push(["cooldown", d, "429"]);
  fill("failovers", [el("p", {}, `${s.summary.failovers} failovers · ${lv.open_circuits || 0} open circuits`), ...(failRows.length ? [table(["", "where", ""], failRows)] : [])], s.summary.failovers > 0 || circuits.length > 0);

  const iv = s.summary.interventions;
  const ivRows = [...Object.entries(iv.pii).map(([k, v]) => ["PII", k, v]), ...Object.entries(iv.policy).map(([k, v]) => ["rejected", k, v])];
  fill("interventions", ivRows.length ? table(["", "what", "count"], ivRows) : empty(), ivRows.length > 0);

  $("#live").textContent = `${s.summary.requests} requests in range · updated ${new Date().toLocaleTimeString()}`;
}

async function api(path) {
  const r = await fetch(path, { headers: { authorization: `Bearer ${state.key}` } });
  if (r.status === 401) { signOut("That key was refused."); throw new Error("unauthorised"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r;
}

async function refresh() {
  try {
    const s = await (await api(`/dashboard/api/summary?range=${state.range}`)).json();
    draw(s);
  } catch (e) {
    $("#live").textContent = `not updated: ${e.message}`;
  }
}

async function loadReport(kind) {
  state.report = kind;
  try {
    const text = await (await api(`/dashboard/api/report?kind=${kind}`)).text();
    fill("reports", el("pre", { class: "report" }, text), text.length > 0);
  } catch (e) {
    fill("reports", empty(`report not available: ${e.message}`), false);
  }
}

function signIn() {
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#logout").hidden = false;
  refresh();
  loadReport(state.report);
  clearInterval(state.timer);
  state.timer = setInterval(refresh, 5000);
}

function signOut(message) {
  sessionStorage.removeItem("gateway-dashboard-key");
  state.key = "";
  clearInterval(state.timer);
  $("#board").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("#key").value.trim();
  sessionStorage.setItem("gateway-dashboard-key", state.key);
  signIn();
});
$("#logout").addEventListener("click", () => signOut());
document.querySelectorAll("#ranges button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("#ranges button").forEach((o) => o.classList.toggle("on", o === b));
  state.range = b.dataset.range;
  refresh();
}));
document.querySelectorAll("[data-report]").forEach((b) => b.addEventListener("click", () => loadReport(b.dataset.report)));

if (state.key) signIn(); else signOut();
