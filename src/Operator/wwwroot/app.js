"use strict";
// The dashboard: one EventSource on /api/events carries status (1/s), progress (5/s per
// migration) and report events; fetches happen only on user actions and when a report arrives.

const $ = sel => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
};
const ms = s => (s >= 1 ? s.toFixed(2) + " s" : (s * 1000).toFixed(1) + " ms");
const STRATEGIES = ["auto", "log", "precopy", "postcopy", "stopcopy"];

let self = null;             // this host's address
const migrations = new Map(); // id -> { charts, node, phases, missing }
const finished = new Set();   // ids whose report arrived

function say(text, ok = true) {
  const m = $("#message");
  m.textContent = text;
  m.className = ok ? "ok" : "bad";
}

async function call(method, url, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const r = await fetch(url, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.text || r.statusText);
  return data;
}

// ---- hosts and guests ----

function renderStatus(status) {
  self = status.host.address;
  $("#self-address").textContent = self;
  const hosts = [status.host, ...status.peers];
  const tb = $("#hosts tbody");
  tb.replaceChildren(...hosts.map(h => el("tr", { "data-host": h.address },
    el("td", {}, h.address),
    el("td", {}, h.self ? "this host" : h.reachable ? "peer" : el("span", { class: "bad", title: h.error }, "unreachable")),
    el("td", { class: "num" }, h.cores ?? ""),
    el("td", { class: "num" }, h.cpuPercent != null ? h.cpuPercent.toFixed(0) + " %" : ""),
    el("td", { class: "num" }, h.workingSetBytes != null ? humanBytes(h.workingSetBytes) : ""),
    el("td", { class: "num" }, humanBytes(h.guestMemoryBytes) + (h.maxGuestMemoryBytes ? " of " + humanBytes(h.maxGuestMemoryBytes) : "")),
    el("td", { class: "num" }, h.guests.filter(g => g.state !== "moved").length),
    el("td", { class: "num" }, h.self ? h.migrationsActive : ""))));

  const peers = status.peers.filter(p => p.reachable).map(p => p.address);
  $("#peer-list").replaceChildren(...peers.map(a => el("option", { value: a })));

  const rows = [];
  for (const h of hosts) for (const g of h.guests) rows.push({ host: h.address, self: h.self, g, peers });
  const body = $("#guests tbody");
  const keep = new Set();
  for (const row of rows) {
    const key = row.host + "/" + row.g.name;
    keep.add(key);
    let tr = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (!tr) {
      tr = el("tr", { "data-key": key, "data-host": row.host, "data-guest": row.g.name });
      for (let i = 0; i < 10; i++) tr.append(el("td"));
      body.append(tr);
    }
    fillGuest(tr, row);
  }
  for (const tr of [...body.children]) if (!keep.has(tr.dataset.key)) tr.remove();
}

function fillGuest(tr, { host, self: mine, g, peers }) {
  const c = tr.children;
  tr.dataset.state = g.state;
  c[0].textContent = host;
  c[1].textContent = g.name;
  c[2].textContent = g.state;
  c[2].className = "state state-" + g.state;
  c[3].textContent = g.icount.toLocaleString("en");
  c[3].className = "num";
  c[4].textContent = mine && g.state !== "moved" ? g.mips.toFixed(1) : "";
  c[4].className = "num";
  c[5].textContent = g.memoryBytes ? humanBytes(g.memoryBytes) : "";
  c[5].className = "num";
  c[6].textContent = g.console ? "tcp:" + g.console : "";
  c[7].textContent = g.image;
  c[8].textContent = g.movedTo ? "moved to " + g.movedTo : g.exitCode != null ? "exit code " + g.exitCode : g.migration ?? "";
  // Actions are rebuilt only when what can be done changes, so a half-typed destination survives updates.
  const kind = !mine ? "none" : g.state === "migrating-out" ? "cancel" : ["running", "idle"].includes(g.state) ? "migrate" : "none";
  if (c[9].dataset.kind === kind) return;
  c[9].dataset.kind = kind;
  if (kind === "migrate") {
    const dest = el("input", { class: "dest", list: "peer-list", placeholder: "HOST:PORT", size: 16, value: peers[0] ?? "", "aria-label": "destination" });
    const strategy = el("select", { class: "strategy", "aria-label": "strategy" }, ...STRATEGIES.map(s => el("option", { value: s }, s)));
    const bandwidth = el("input", { class: "bandwidth", size: 7, value: "", placeholder: "bandwidth", title: "e.g. 1gbit, 50MB; empty = unlimited", "aria-label": "bandwidth" });
    const go = el("button", { class: "migrate", onclick: () => migrate(g.name, dest.value.trim(), strategy.value, bandwidth.value.trim()) }, "Migrate");
    c[9].replaceChildren(dest, " ", strategy, " ", bandwidth, " ", go);
  } else if (kind === "cancel") {
    c[9].replaceChildren(el("button", { class: "cancel secondary", onclick: () => cancel(g.name) }, "Cancel"));
  } else c[9].replaceChildren();
}

async function migrate(name, to, strategy, bandwidth) {
  if (!to) { say("give the destination host (HOST:PORT)", false); return; }
  try {
    const a = await call("POST", "/api/migrate", { name, to, strategy, bandwidth: bandwidth || "0" });
    say(`migrating ${name} to ${to} (${strategy})${a.migrationId ? ", migration " + a.migrationId : ""}`);
  } catch (e) { say(e.message, false); }
}

async function cancel(name) {
  try { say((await call("POST", "/api/cancel", { name })).text); } catch (e) { say(e.message, false); }
}

$("#start-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  try { say((await call("POST", "/api/guests", new FormData(ev.target))).text); } catch (e) { say(e.message, false); }
});

// ---- migrations in progress ----

const CHARTS = [
  ["rate", "wire rate", "#2e6bd1", v => humanBytes(v) + "/s", p => p.bytesPerSecond],
  ["lag", "replay lag", "#b42318", v => (v * 1000).toFixed(1) + " ms", p => p.replayLagSeconds],
  ["throttle", "throttle", "#1e7f4f", v => (v * 100).toFixed(0) + " %", p => p.throttle],
  ["dirty", "dirty pages (last round)", "#8e44ad", v => v.toFixed(0), p => p.dirtyPages],
];

function onProgress(m) {
  let entry = migrations.get(m.id);
  if (!entry) {
    const charts = {};
    const grid = el("div", { class: "charts" });
    for (const [key, title, color, format] of CHARTS) {
      const canvas = el("canvas", { "data-chart": key });
      grid.append(el("div", { class: "chart" }, canvas));
      charts[key] = new LineChart(canvas, { title, color, format });
    }
    const node = el("div", { class: "migration", "data-migration": m.id, "data-guest": m.name },
      el("h3", {}, `${m.name}: ${m.from} → ${m.to} (${m.requested})`),
      el("div", { class: "facts" }), el("div", { class: "bar" }, el("div")), grid);
    const box = $("#active");
    box.querySelector(".empty")?.remove();
    box.append(node);
    entry = { charts, node, phases: [] };
    migrations.set(m.id, entry);
  }
  const p = m.progress;
  if (!p) return;
  if (entry.phases.at(-1)?.phase !== p.phase) entry.phases.push({ phase: p.phase, t: p.elapsedSeconds });
  entry.node.dataset.updates = String(Number(entry.node.dataset.updates || 0) + 1);
  entry.node.dataset.bytes = String(p.bytesSent);
  entry.node.querySelector(".facts").replaceChildren(
    "phase ", el("b", { class: "phase" }, p.phase), " · strategy ", el("b", {}, p.strategy + (p.strategy === "precopy" ? " r" + p.round : "")),
    " · elapsed ", el("b", { class: "elapsed" }, p.elapsedSeconds.toFixed(1) + " s"),
    " · sent ", el("b", { class: "sent" }, humanBytes(p.bytesSent)),
    " · phases ", entry.phases.map(x => `${x.phase} @${x.t.toFixed(1)} s`).join(" → "));
  entry.node.querySelector(".bar > div").style.width = p.pagesTotal ? (100 * p.pagesSent / p.pagesTotal).toFixed(1) + "%" : "0";
  for (const [key, , , , value] of CHARTS) entry.charts[key].push(p.elapsedSeconds, value(p));
}

function endMigration(id) {
  const entry = migrations.get(id);
  if (!entry) return;
  entry.node.remove();
  migrations.delete(id);
  if (migrations.size === 0) $("#active").replaceChildren(el("p", { class: "empty" }, "none"));
}

// ---- reports ----

async function loadReports() {
  const list = await call("GET", "/api/reports");
  $("#reports tbody").replaceChildren(...list.map(r => el("tr", { class: "clickable", "data-report": r.id, onclick: () => showReport(r.id) },
    el("td", {}, r.finishedUtc.replace("T", " ").slice(0, 19)),
    el("td", {}, r.name),
    el("td", {}, `${r.source} → ${r.destination}`),
    el("td", {}, r.strategy + (r.resumedPostcopy ? " (resume)" : "")),
    el("td", { class: r.success ? "ok" : "bad" }, r.success ? "migrated" : "failed"),
    el("td", { class: "num" }, ms(r.totalSeconds)),
    el("td", { class: "num" }, r.success ? ms(r.downtimeSeconds) : ""),
    el("td", { class: "num" }, humanBytes(r.bytesTotal)))));
}

async function showReport(id) {
  const r = await call("GET", "/api/reports/" + encodeURIComponent(id));
  const n = k => Number(r[k] ?? 0);
  const rows = [
    ["migration", `${r.migrationId}: ${r.name}, ${r.source} → ${r.destination} (${r.strategy})`],
    ["outcome", r.success ? "migrated" : "failed" + (r.error ? ": " + r.error : "")],
    ["setup / checkpoint / log / switchover", [n("setupSeconds"), n("checkpointSeconds"), n("logSeconds"), n("switchoverSeconds")].map(ms).join(" / ")],
    ["total", ms(n("totalSeconds"))],
    ["downtime", `${ms(n("downtimeSeconds"))} (${r.downtimeClock})`],
    ["bytes: checkpoint / log / state / protocol / post-copy", ["bytesCheckpoint", "bytesLog", "bytesState", "bytesProtocol", "bytesPostcopy"].map(k => humanBytes(n(k))).join(" / ")],
    ["bytes: total", humanBytes(n("bytesTotal"))],
    ["pages sent / zero", `${n("pagesSent")} / ${n("zeroPages")}`],
    ["throttle max / mean", `${(n("maxThrottle") * 100).toFixed(0)} % / ${(n("meanThrottle") * 100).toFixed(0)} %`],
    ...(r.switches || []).map(s => [`strategy @ ${ms(s.t)}`, `${s.from ? s.from + " → " : ""}${s.to}: ${s.reason}`]),
    ["verified", r.digestVerified ? `digest ${BigInt(r.digest).toString(16).padStart(16, "0")} at icount ${BigInt(r.icount).toLocaleString("en")}` : "no"],
  ];
  const base = "/api/reports/" + encodeURIComponent(id);
  $("#report-detail").replaceChildren(
    el("h3", {}, "Report " + r.migrationId),
    el("table", {}, el("tbody", {}, ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))))),
    el("p", {}, el("a", { href: base, target: "_blank" }, "JSON"), " · ", el("a", { href: base + "/timeline.png", target: "_blank" }, "PNG"), " · ",
      el("a", { href: base + "/timeline.svg", target: "_blank" }, "SVG")),
    el("img", { src: base + "/timeline.svg", alt: "timeline of migration " + r.migrationId, class: "timeline" }));
  $("#report-detail").hidden = false;
}

// ---- the live feed ----

function connect() {
  const live = $("#live");
  const es = new EventSource("/api/events");
  es.onopen = () => { live.textContent = "live"; live.className = "badge on"; };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "badge off"; };
  es.addEventListener("status", e => {
    const s = JSON.parse(e.data);
    renderStatus(s);
    // A status sampled just before a progress or report event may arrive after it: a migration
    // ends on its report, or when two statuses in a row no longer list it.
    const active = new Set(s.migrations.map(m => m.id));
    for (const [id, entry] of migrations) {
      entry.missing = active.has(id) ? 0 : (entry.missing ?? 0) + 1;
      if (entry.missing >= 2) endMigration(id);
    }
    for (const m of s.migrations) if (!migrations.has(m.id) && !finished.has(m.id)) onProgress(m);
  });
  es.addEventListener("progress", e => {
    const m = JSON.parse(e.data);
    if (!finished.has(m.id)) onProgress(m);
  });
  es.addEventListener("report", async e => {
    const r = JSON.parse(e.data);
    finished.add(r.id);
    endMigration(r.id);
    say(r.success ? `${r.name} migrated to ${r.destination} in ${ms(r.totalSeconds)}, downtime ${ms(r.downtimeSeconds)}` : `migration of ${r.name} failed: ${r.error ?? ""}`, r.success);
    await loadReports();
    await showReport(r.id);
  });
}

loadReports().catch(e => say(e.message, false));
connect();
