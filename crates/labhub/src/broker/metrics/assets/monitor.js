// The labhub monitor: reads the broker's event stream (/api/events, text/event-stream) and
// shows every channel with its producer, consumers, rates, latency, drops, lag and a plot of
// its frame rate. Plain DOM and canvas, served by the broker itself.
//
// The token (needed when the broker listens on a non-loopback address) comes in the URL
// fragment, `#token=…`, which browsers never send to a server; the page moves it to session
// storage, removes it from the address bar and sends it as `Authorization: Bearer`. That is why
// the stream is read with fetch rather than EventSource, which cannot send headers.
"use strict";

const HISTORY_POINTS = 120;
const RECONNECT_MS = 2000;

const token = (() => {
  const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("labhub-token", decodeURIComponent(match[1]));
    window.history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("labhub-token");
})();

const rateHistory = new Map(); // channel name -> [{t, fps}]
const rows = new Map(); // channel name -> {row, cells, plot, consumers: Map}
const tbody = document.querySelector("#channels tbody");
const statusEl = document.getElementById("status");
const brokerEl = document.getElementById("broker");
const emptyEl = document.getElementById("empty");
const messageEl = document.getElementById("message");

function setStatus(status, text) {
  statusEl.dataset.status = status;
  statusEl.textContent = text;
}

function showMessage(text) {
  messageEl.hidden = !text;
  messageEl.textContent = text || "";
}

// ---- formatting ------------------------------------------------------------------------------

function rate(v) {
  if (v === undefined || v === null) return "–";
  if (v < 10) return v.toFixed(2);
  if (v < 1000) return v.toFixed(1);
  return Math.round(v).toLocaleString("en-US");
}

function micros(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 10000) return (v / 1000).toFixed(1) + " ms";
  return v.toFixed(1) + " µs";
}

function bytes(v) {
  if (v === undefined || v === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function count(v) {
  return v === undefined || v === null ? "–" : v.toLocaleString("en-US");
}

function seconds(v) {
  return v === undefined || v === null ? "–" : v.toFixed(1) + " s";
}

function sum(values) {
  const known = values.filter((v) => v !== undefined && v !== null);
  return known.length ? known.reduce((a, b) => a + b, 0) : undefined;
}

// ---- table -----------------------------------------------------------------------------------

const CHANNEL_FIELDS = ["name", "state", "producer", "fps", "mbps", "latency", "p99", "drops", "lag", "segment"];
const NUMERIC = new Set(["fps", "mbps", "latency", "p99", "drops", "lag", "segment"]);

function makeRow(className, fields) {
  const row = document.createElement("tr");
  row.className = className;
  const cells = {};
  for (const f of fields) {
    const td = document.createElement("td");
    td.dataset.field = f;
    td.className = (f === "name" ? "name" : "") + (NUMERIC.has(f) ? " num" : "");
    row.appendChild(td);
    cells[f] = td;
  }
  return { row, cells };
}

function set(cell, text, value) {
  if (cell.textContent !== text) cell.textContent = text;
  const raw = value === undefined || value === null ? "" : String(value);
  if (cell.dataset.value !== raw) cell.dataset.value = raw;
}

function channelRow(name) {
  let entry = rows.get(name);
  if (entry) return entry;
  const { row, cells } = makeRow("channel", CHANNEL_FIELDS);
  row.dataset.channel = name;
  const badge = document.createElement("span");
  badge.className = "state";
  cells.state.appendChild(badge);
  const plotCell = document.createElement("td");
  const plot = document.createElement("canvas");
  plot.className = "plot";
  plot.width = 160;
  plot.height = 30;
  plotCell.appendChild(plot);
  row.appendChild(plotCell);
  entry = { row, cells, badge, plot, consumers: new Map() };
  rows.set(name, entry);
  return entry;
}

function consumerRow(entry, key) {
  let c = entry.consumers.get(key);
  if (c) return c;
  c = makeRow("consumer", CHANNEL_FIELDS);
  c.row.dataset.consumer = key;
  c.row.appendChild(document.createElement("td"));
  entry.consumers.set(key, c);
  return c;
}

function updateChannel(ch) {
  const entry = channelRow(ch.name);
  const c = entry.cells;
  entry.row.dataset.state = ch.state;
  set(c.name, ch.name);
  if (entry.badge.textContent !== ch.state) entry.badge.textContent = ch.state;
  c.state.dataset.value = ch.state;
  const who = ch.producer + (ch.producer_pid ? " (pid " + ch.producer_pid + ")" : "");
  set(c.producer, who);
  c.producer.title = [ch.producer_host, ch.producer_version, ch.policy].filter(Boolean).join(" · ");
  set(c.fps, rate(ch.frames_per_s), ch.frames_per_s);
  set(c.mbps, rate(ch.mb_per_s), ch.mb_per_s);
  set(c.latency, micros(ch.latency_mean_us), ch.latency_mean_us);
  set(c.p99, micros(ch.latency_p99_us), ch.latency_p99_us);
  const missed = sum(ch.consumers.map((k) => k.missed));
  const drops = sum([ch.publish_failures, ch.dropped, ch.overwritten, missed]);
  set(c.drops, count(drops), drops);
  c.drops.title =
    "failed publishes " + count(ch.publish_failures) + ", dropped " + count(ch.dropped) +
    ", overwritten " + count(ch.overwritten) + ", missed by consumers " + count(missed);
  set(c.lag, count(ch.max_lag_frames), ch.max_lag_frames);
  set(c.segment, bytes(ch.segment_bytes), ch.segment_bytes);

  const seen = new Set();
  for (const k of ch.consumers) {
    const key = k.client || "pid " + k.pid;
    seen.add(key);
    const r = consumerRow(entry, key).cells;
    set(r.name, "└ " + key);
    set(r.state, k.heartbeat_age_s === undefined ? "" : "hb " + seconds(k.heartbeat_age_s), k.heartbeat_age_s);
    set(r.producer, [k.pid ? "pid " + k.pid : "", k.version || ""].filter(Boolean).join(" · "));
    set(r.fps, rate(k.frames_per_s), k.frames_per_s);
    set(r.mbps, rate(k.mb_per_s), k.mb_per_s);
    set(r.latency, micros(k.latency_mean_us), k.latency_mean_us);
    set(r.p99, micros(k.latency_p99_us), k.latency_p99_us);
    set(r.drops, count(k.missed), k.missed);
    set(r.lag, count(k.lag_frames), k.lag_frames);
    set(r.segment, "");
  }
  for (const key of [...entry.consumers.keys()]) {
    if (!seen.has(key)) {
      entry.consumers.get(key).row.remove();
      entry.consumers.delete(key);
    }
  }
  return entry;
}

// ---- plot ------------------------------------------------------------------------------------

function drawPlot(canvas, points) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const values = points.map((p) => (p.fps === undefined || p.fps === null ? 0 : p.fps));
  canvas.dataset.points = String(values.length);
  if (values.length < 2) return;
  const max = Math.max(...values, 1e-9);
  const step = w / (HISTORY_POINTS - 1);
  const x0 = w - (values.length - 1) * step;
  const y = (v) => h - 1 - (v / max) * (h - 3);
  ctx.beginPath();
  ctx.moveTo(x0, h);
  values.forEach((v, i) => ctx.lineTo(x0 + i * step, y(v)));
  ctx.lineTo(x0 + (values.length - 1) * step, h);
  ctx.closePath();
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--plot-fill");
  ctx.fill();
  ctx.beginPath();
  values.forEach((v, i) => (i === 0 ? ctx.moveTo(x0, y(v)) : ctx.lineTo(x0 + i * step, y(v))));
  ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue("--plot");
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

function remember(name, t, fps) {
  let points = rateHistory.get(name);
  if (!points) {
    points = [];
    rateHistory.set(name, points);
  }
  if (points.length && points[points.length - 1].t >= t) return;
  points.push({ t, fps });
  if (points.length > HISTORY_POINTS) points.splice(0, points.length - HISTORY_POINTS);
}

// ---- samples ---------------------------------------------------------------------------------

function onHistory(data) {
  for (const [name, points] of Object.entries(data)) {
    rateHistory.set(name, points.slice(-HISTORY_POINTS).map((p) => ({ t: p.t, fps: p.fps })));
  }
}

function onSample(sample) {
  const b = sample.broker;
  brokerEl.textContent =
    b.channels + " channels · " + b.clients + " clients · heartbeat " + b.heartbeat_interval_ms +
    " ms · up " + seconds(b.uptime_s) + " · " + new Date(sample.time_unix_ms).toLocaleTimeString();
  const names = new Set();
  // The table body is rebuilt in order only when the set of rows changes.
  let order = [];
  for (const ch of sample.channels) {
    names.add(ch.name);
    remember(ch.name, sample.time_unix_ms, ch.frames_per_s);
    const entry = updateChannel(ch);
    drawPlot(entry.plot, rateHistory.get(ch.name) || []);
    order.push(entry.row, ...[...entry.consumers.values()].map((c) => c.row));
  }
  for (const name of [...rows.keys()]) {
    if (!names.has(name)) {
      const entry = rows.get(name);
      entry.row.remove();
      entry.consumers.forEach((c) => c.row.remove());
      rows.delete(name);
      rateHistory.delete(name);
    }
  }
  const current = [...tbody.children];
  if (current.length !== order.length || current.some((r, i) => r !== order[i])) {
    tbody.replaceChildren(...order);
  }
  emptyEl.hidden = sample.channels.length > 0;
}

// ---- the event stream ------------------------------------------------------------------------

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "history") onHistory(payload);
  else if (event === "sample") onSample(payload);
}

async function connect() {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const response = await fetch("/api/events", { headers, cache: "no-store" });
    if (response.status === 401) {
      setStatus("unauthorised", "token needed");
      showMessage(
        "This broker needs its token: open the address `labhub hub` printed, which ends in " +
        "#token=…, or add #token=<the contents of metrics.token> to this page's address."
      );
      return;
    }
    if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
    showMessage("");
    setStatus("live", "live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (e) {
    // Falls through to the reconnect below.
  }
  setStatus("disconnected", "disconnected, retrying…");
  setTimeout(connect, RECONNECT_MS);
}

connect();
