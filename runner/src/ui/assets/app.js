// The runner's dashboard and HTML report: one page, two data sources.
// Live: the run's event stream (/api/v1/runs/ID/events) sends the whole
// history, then a snapshot point each second, control events and the
// totals so far; the controls PATCH and stop the run. Report: the same
// charts and tables from data embedded in the page (window.REPORT), with
// no network at all.
"use strict";

(function () {
  const REPORT = window.REPORT;
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const state = { run: null, points: [], events: [], totals: null, final: null, status: "" };
  const charts = {};
  window.dash = { state, charts };

  // ---------- small helpers ----------
  const $ = (sel, root = document) => root.querySelector(sel);
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1000) return (v / 1000).toFixed(2) + "s";
    if (v >= 1) return v.toFixed(2) + "ms";
    return Math.round(v * 1000) + "µs";
  }
  function num(v, digits = 0) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }
  function bytes(v) {
    if (!v) return "0 B/s";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + units[i] + "/s";
  }
  function label(name, tags) {
    const t = Object.entries(tags || {}).map(([k, v]) => k + "=" + v);
    return t.length ? name + " {" + t.join(", ") + "}" : name;
  }
  function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(path, Object.assign({}, opts, { headers }));
  }
  function withToken(path) {
    return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
  }

  // ---------- layout ----------
  function layout() {
    const app = $("#app");
    app.replaceChildren(
      el("header", {},
        el("h1", {}, REPORT ? "Load test report" : "runner"),
        el("span", { id: "scenario", class: "meta" }),
        el("span", { id: "state", class: "badge" }),
        el("span", { id: "elapsed", class: "meta" }),
        el("span", { class: "spacer" }),
        el("span", { id: "runs", class: "runs" })),
      el("main", {},
        el("div", { class: "tiles" },
          ...(REPORT
            ? [tile("rps", "requests/s, whole run"), tile("p95", "p95 latency, all requests"), tile("errors", "errors"),
              tile("vus", "VUs"), tile("iters", "iterations/s"), tile("bytes", "bytes in / out")]
            : [tile("rps", "requests/s"), tile("p95", "p95 latency, last second"), tile("errors", "errors, last second"),
              tile("vus", "active / target VUs"), tile("iters", "iterations/s"), tile("bytes", "bytes in / out")])),
        REPORT ? null : el("section", { class: "panel", id: "control-panel" },
          el("h2", {}, "Load"),
          el("div", { class: "controls", id: "controls" }),
          el("div", { id: "status" })),
        el("div", { class: "charts" },
          chartPanel("rps-chart", "Requests and errors per second"),
          chartPanel("latency-chart", "HTTP latency (ms)"),
          chartPanel("vus-chart", "VUs"),
          chartPanel("msg-chart", "MQTT / NATS messages per second", true),
          REPORT ? chartPanel("dist-chart", "Latency distribution (ms by percentile)") : null),
        el("section", { class: "panel" }, el("h2", {}, "HTTP"), el("div", { id: "http-table" })),
        el("section", { class: "panel", id: "messaging-panel", hidden: "" }, el("h2", {}, "MQTT and NATS"), el("div", { id: "messaging-table" })),
        el("div", { class: "charts" },
          el("section", { class: "panel" }, el("h2", {}, "Checks"), el("div", { id: "checks" })),
          el("section", { class: "panel" }, el("h2", {}, "Thresholds"), el("div", { id: "thresholds" })),
          el("section", { class: "panel" }, el("h2", {}, "Iterations and traps"), el("div", { id: "traps" }))),
        el("section", { class: "panel", id: "summary-panel", hidden: "" }, el("h2", {}, "Summary"), el("div", { id: "summary" })),
        REPORT ? el("section", { class: "panel" }, el("h2", {}, "Options"), el("div", { id: "options" })) : null));
  }
  function tile(id, name) {
    return el("div", { class: "tile", id: "tile-" + id }, el("div", { class: "label" }, name), el("div", { class: "value" }, "–"));
  }
  function chartPanel(id, title, hidden) {
    return el("section", { class: "panel", id: id + "-panel", hidden: hidden ? "" : null }, el("h2", {}, title), el("div", { id }));
  }

  // ---------- charts ----------
  const palette = ["#2563eb", "#c62828", "#1a7f37", "#b45309", "#7c3aed", "#0891b2"];
  function makeChart(id, names, opts = {}) {
    const target = document.getElementById(id);
    const width = Math.max(320, target.clientWidth || 460);
    const series = [{ label: opts.xLabel || "s" }].concat(names.map((n, i) => ({
      label: n, stroke: palette[i % palette.length], width: 1.5, spanGaps: false,
      dash: n.startsWith("target") ? [6, 4] : undefined,
    })));
    const u = new uPlot({
      width, height: 220, series,
      scales: { x: { time: false } },
      axes: [{ label: opts.xLabel || "seconds", values: opts.xValues }, { size: 60 }],
      legend: { live: false },
      hooks: { draw: [drawMarkers] },
    }, [[]].concat(names.map(() => [])), target);
    charts[id] = u;
    return u;
  }
  // Vertical dashed lines where the load was changed, stopped or swapped.
  function drawMarkers(u) {
    if (u.root.parentElement && u.root.parentElement.id === "dist-chart") return;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#9ca3af";
    ctx.setLineDash([3, 3]);
    for (const e of state.events) {
      const x = u.valToPos(e.t, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  }
  function initCharts() {
    makeChart("rps-chart", ["requests/s", "errors/s"]);
    makeChart("latency-chart", ["p50", "p90", "p95", "p99"]);
    makeChart("vus-chart", ["active VUs", "target VUs", "target arrivals/s"]);
    makeChart("msg-chart", ["sent/s", "received/s"]);
  }
  function redraw() {
    // A run's final snapshot may cover only milliseconds: its rates would
    // be noise, so charts leave such partial seconds out.
    const p = state.points.filter((x, i) => x.interval >= 0.5 || i < state.points.length - 1);
    const t = p.map((x) => x.t);
    const q = (k) => p.map((x) => (x.latency_ms ? x.latency_ms[k] : null));
    charts["rps-chart"].setData([t, p.map((x) => x.rps), p.map((x) => x.errors_per_s)]);
    charts["latency-chart"].setData([t, q("p50"), q("p90"), q("p95"), q("p99")]);
    const open = p.some((x) => x.rate_target > 0);
    const closed = p.some((x) => x.target_vus > 0);
    charts["vus-chart"].setData([t, p.map((x) => x.vus),
      p.map((x) => (closed ? x.target_vus : null)), p.map((x) => (open ? x.rate_target : null))]);
    const messaging = p.some((x) => x.messages_sent_per_s > 0 || x.messages_received_per_s > 0);
    $("#msg-chart-panel").hidden = !messaging;
    if (messaging) {
      charts["msg-chart"].setData([t, p.map((x) => x.messages_sent_per_s), p.map((x) => x.messages_received_per_s)]);
    }
  }

  // ---------- tiles, tables ----------
  function setTile(id, text) { $("#tile-" + id + " .value").textContent = text; }
  function tiles() {
    if (REPORT) return reportTiles();
    // The last whole second: the run's final snapshot may cover only the
    // few milliseconds after the previous one.
    const whole = state.points.filter((p) => p.interval >= 0.5);
    const last = whole[whole.length - 1] || state.points[state.points.length - 1];
    if (!last) return;
    setTile("rps", num(last.rps, 1));
    setTile("p95", last.latency_ms ? ms(last.latency_ms.p95) : "–");
    const pct = last.requests ? (100 * last.failed) / last.requests : 0;
    setTile("errors", num(pct, 2) + " %");
    setTile("vus", last.target_vus > 0 ? num(last.vus) + " / " + num(last.target_vus) : num(last.vus));
    setTile("iters", num(last.iterations_per_s, 1));
    setTile("bytes", bytes(last.bytes_in_per_s) + " / " + bytes(last.bytes_out_per_s));
  }
  // A report's tiles are the whole run's figures.
  function reportTiles() {
    const s = state.final;
    if (!s) return;
    const secs = Math.max(1e-9, s.meta.duration_s);
    const http = s.http || [];
    const requests = http.reduce((a, r) => a + r.requests, 0);
    const failed = http.reduce((a, r) => a + r.failed, 0);
    const d = REPORT.distribution || { percentiles: [], ms: [] };
    const i95 = d.percentiles.indexOf(95);
    setTile("rps", num(requests / secs, 1));
    setTile("p95", i95 >= 0 ? ms(d.ms[i95]) : "–");
    setTile("errors", num(requests ? (100 * failed) / requests : 0, 2) + " %");
    setTile("vus", num(s.meta.peak_vus) + " at most");
    setTile("iters", num(s.iterations.rate, 1));
    const bin = http.reduce((a, r) => a + r.bytes_received, 0);
    const bout = http.reduce((a, r) => a + r.bytes_sent, 0);
    setTile("bytes", bytes(bin / secs) + " / " + bytes(bout / secs));
  }
  function table(headers, rows, id) {
    if (!rows.length) return el("div", { class: "empty" }, "none");
    return el("table", { id },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", {}, c)))))));
  }
  function tables(s) {
    if (!s) return;
    const pct = (l, k) => (l ? ms(l[k]) : "–");
    $("#http-table").replaceChildren(table(
      ["name", "requests", "req/s", "failed", "p50", "p90", "p95", "p99", "max"],
      (s.http || []).map((r) => [label(r.name, r.tags), num(r.requests), num(r.rate, 1), num(r.failed),
        pct(r.latency_ms, "p50"), pct(r.latency_ms, "p90"), pct(r.latency_ms, "p95"), pct(r.latency_ms, "p99"), pct(r.latency_ms, "max")]),
      "http-rows"));
    const msg = [];
    for (const proto of ["mqtt", "nats"]) {
      for (const r of s[proto] || []) {
        msg.push([proto.toUpperCase() + " " + r.name, num(r.connects), num(r.published), num(r.received), num(r.requests),
          pct(r.publish_ms, "p95"), pct(r.message_latency_ms, "p95"), pct(r.request_ms, "p95"), num(r.failed)]);
      }
    }
    $("#messaging-panel").hidden = msg.length === 0;
    $("#messaging-table").replaceChildren(table(
      ["name", "connects", "published", "received", "requests", "publish p95", "message p95", "request p95", "failed"], msg));
    $("#checks").replaceChildren(table(["check", "pass", "fail", "rate"],
      (s.checks || []).map((c) => [label(c.name, c.tags), num(c.pass), num(c.fail),
        el("span", { class: c.fail ? "fail" : "pass" }, num(100 * c.rate, 2) + " %")])));
    $("#thresholds").replaceChildren(table(["threshold", "observed", ""],
      (s.thresholds || []).map((t) => [t.threshold,
        t.value === null || t.value === undefined ? "no data" : t.unit === "ms" ? ms(t.value) : num(t.value, 4),
        el("span", { class: t.pass ? "pass" : "fail" }, t.pass ? "✓ pass" : "✗ fail")])));
    const it = s.iterations || {};
    const traps = Object.entries(s.traps || {}).map(([k, v]) => ["trap: " + k, num(v)]);
    $("#traps").replaceChildren(table(["", "count"], [
      ["iterations ok", num(it.ok)], ["iterations failed", num(it.failed)], ["iterations aborted", num(it.aborted)],
      ["dropped arrivals", num(it.dropped)]].concat(traps)));
  }
  function header() {
    const m = (state.final || state.totals || {}).meta || {};
    const run = state.run || {};
    const name = (run.scenario && run.scenario.name) || m.scenario || "";
    $("#scenario").textContent = name + (run.id ? "  ·  run " + run.id : "");
    const st = state.status || (REPORT ? "finished" : "");
    const badge = $("#state");
    badge.textContent = st;
    badge.className = "badge " + st;
    const last = state.points[state.points.length - 1];
    const t = state.final ? state.final.meta.duration_s : last ? last.t : 0;
    $("#elapsed").textContent = num(t, 1) + " s";
  }
  function summary() {
    const s = state.final;
    if (!s) return;
    const m = s.meta;
    const requests = (s.http || []).reduce((a, r) => a + r.requests, 0);
    const failed = (s.http || []).reduce((a, r) => a + r.failed, 0);
    const passed = (s.thresholds || []).every((t) => t.pass);
    $("#summary-panel").hidden = false;
    $("#summary").replaceChildren(table(["", ""], [
      ["scenario", m.scenario + " (" + (m.sha256 || "").slice(0, 12) + ")"],
      ["duration", num(m.duration_s, 1) + " s"],
      ["VUs", num(m.vus) + " (peak " + num(m.peak_vus) + ")"],
      ["requests", el("span", { id: "total-requests" }, String(requests))],
      ["failed", el("span", { id: "total-failed" }, String(failed))],
      ["iterations", num(s.iterations.ok + s.iterations.failed) + " completed, " + num(s.iterations.aborted) + " aborted"],
      ["thresholds", el("span", { id: "thresholds-verdict", class: passed ? "pass" : "fail" }, passed ? "all passed" : "failed")],
      ["stopped", m.stopped_by ? "by " + m.stopped_by : m.aborted_by_threshold ? "by threshold " + m.aborted_by_threshold : "at its end"],
    ].concat((m.scenarios || []).map((p) => ["scenario phase", p.name + " " + num(p.from_s, 1) + "–" + num(p.to_s, 1) + " s"]))
      .concat((m.events || []).map((e) => ["at " + num(e.t, 1) + " s", e.message]))));
  }
  function render() {
    header();
    tiles();
    redraw();
    tables(state.final || state.totals);
    summary();
    controls();
  }

  // ---------- controls (live) ----------
  function setStatus(text, error) {
    const s = $("#status");
    if (!s) return;
    s.textContent = text;
    s.className = error ? "error" : "";
  }
  let controlsFor = "";
  function controls() {
    const box = $("#controls");
    if (!box) return;
    const last = state.points[state.points.length - 1];
    const over = state.status === "finished" || state.status === "failed";
    const classes = last ? last.classes : [];
    const key = classes.map((c) => c.name + c.model).join("|") + over;
    if (key === controlsFor) return;
    controlsFor = key;
    const items = classes.map((c) => {
      const open = c.model === "open";
      const value = open ? c.rate : c.target_vus;
      return el("div", { class: "class-control", "data-class": c.name },
        el("div", { class: "control" },
          el("label", {}, c.name + (open ? ": arrivals/s" : ": VUs (max " + c.max_vus + ")")),
          el("input", { class: "target", type: "number", min: "0", step: open ? "any" : "1", value: value === null ? "" : value, disabled: over ? "" : null })),
        el("div", { class: "control" },
          el("label", {}, "over (ramp)"),
          el("input", { class: "ramp", type: "text", value: "0s", disabled: over ? "" : null })),
        el("button", { class: "apply primary", disabled: over ? "" : null, onclick: () => apply(c) }, "Apply"));
    });
    box.replaceChildren(...items,
      el("div", { class: "class-control" },
        el("button", { id: "stop", class: "danger", disabled: over ? "" : null, onclick: () => stop(false) }, "Stop"),
        el("button", { id: "abort", disabled: over ? "" : null, onclick: () => stop(true) }, "Abort")));
  }
  async function apply(c) {
    const row = document.querySelector('.class-control[data-class="' + CSS.escape(c.name) + '"]');
    const value = Number($("input.target", row).value);
    const ramp = $("input.ramp", row).value.trim() || "0s";
    const body = { class: c.name, ramp };
    body[c.model === "open" ? "rate" : "vus"] = value;
    const r = await api("/api/v1/runs/" + state.run.id, {
      method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({}));
    if (r.ok) setStatus((j.events || []).map((e) => e.message).join("; "));
    else setStatus(j.detail || "the change failed (" + r.status + ")", true);
  }
  async function stop(abort) {
    const r = await api("/api/v1/runs/" + state.run.id + "/stop" + (abort ? "?abort=true" : ""), { method: "POST" });
    const j = await r.json().catch(() => ({}));
    if (r.ok) setStatus(j.message || "stopping");
    else setStatus(j.detail || "stop failed (" + r.status + ")", true);
  }

  // ---------- live ----------
  async function pickRun() {
    const wanted = params.get("run");
    const r = await api("/api/v1/runs");
    if (!r.ok) throw new Error("GET /api/v1/runs: " + r.status);
    const runs = await r.json();
    const links = $("#runs");
    links.replaceChildren(...runs.slice(-8).map((x) =>
      el("a", { href: "?" + new URLSearchParams(Object.assign({ run: x.id }, token ? { token } : {})) }, x.id)));
    if (wanted) return runs.find((x) => x.id === wanted) || null;
    return runs.find((x) => x.state === "running" || x.state === "stopping") || runs[runs.length - 1] || null;
  }
  async function live() {
    let run = null;
    while (!run) {
      try {
        run = await pickRun();
      } catch (e) {
        setStatus(String(e), true);
      }
      if (!run) {
        setStatus("no run yet: submit one (POST /api/v1/runs) and it shows here");
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
    state.run = run;
    setStatus("");
    const source = new EventSource(withToken("/api/v1/runs/" + run.id + "/events"));
    let pending = false;
    const later = () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; render(); });
    };
    source.addEventListener("state", (e) => { state.status = JSON.parse(e.data).state; later(); });
    source.addEventListener("snapshot", (e) => { state.points.push(JSON.parse(e.data)); later(); });
    source.addEventListener("control", (e) => { state.events.push(JSON.parse(e.data)); later(); });
    source.addEventListener("totals", (e) => { state.totals = JSON.parse(e.data); later(); });
    source.addEventListener("end", (e) => {
      const data = JSON.parse(e.data);
      if (data.error) { state.status = "failed"; setStatus(data.error, true); } else { state.final = data; state.status = "finished"; }
      source.close();
      later();
    });
    source.onerror = () => { if (!state.final) setStatus("event stream interrupted; reconnecting", true); };
  }

  // ---------- report ----------
  function report() {
    state.points = REPORT.points || [];
    state.final = REPORT.summary;
    state.events = (REPORT.summary && REPORT.summary.meta.events) || [];
    state.status = "finished";
    const d = REPORT.distribution;
    if (d && d.percentiles.length) {
      const nines = d.percentiles.map((p) => -Math.log10(Math.max(1e-6, 1 - p / 100)));
      makeChart("dist-chart", ["latency"], {
        xLabel: "percentile",
        xValues: (u, vals) => vals.map((v) => (100 * (1 - Math.pow(10, -v))).toPrecision(6).replace(/\.?0+$/, "") + "%"),
      }).setData([nines, d.ms]);
    }
    const o = (REPORT.summary && REPORT.summary.meta.options) || {};
    $("#options").replaceChildren(table(["option", "value"],
      Object.entries(o).filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length) && !(typeof v === "object" && !Array.isArray(v) && !Object.keys(v).length))
        .map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])));
    render();
  }

  layout();
  initCharts();
  if (REPORT) report();
  else live();
})();
