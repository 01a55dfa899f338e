// The live page: polls /ui/data once a second and shows rates and
// quantiles computed from the differences between two reads.
"use strict";

const POLL_MS = 1000;
const HISTORY = 60; // points of the sparklines
const TOKEN_KEY = "ratelimiter-admin-token";

let previous = null; // the last document
const history = new Map(); // namespace -> checks/s, oldest first

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmtRate(v) {
  if (!isFinite(v)) return "–";
  if (v >= 1000) return (v / 1000).toFixed(1) + "k";
  return v.toFixed(v < 10 ? 1 : 0);
}

function fmtDuration(s) {
  if (s === null || !isFinite(s)) return "–";
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms";
  return s.toFixed(2) + " s";
}

// quantile of the checks between two cumulative histograms, interpolated
// linearly within a bucket as Prometheus's histogram_quantile does.
function quantile(q, now, before) {
  if (!now || now.length === 0) return null;
  const delta = now.map((b, i) => ({ le: b.le, count: b.count - (before && before[i] ? before[i].count : 0) }));
  const total = delta[delta.length - 1].count;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const b of delta) {
    if (b.count >= rank) {
      if (b.le === null) return lower; // in +Inf: the highest finite bound
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + (b.le - lower) * (rank - below) / inBucket : b.le;
    }
    if (b.le !== null) lower = b.le;
    below = b.count;
  }
  return lower;
}

function badge(id, text, state) {
  const b = document.getElementById(id);
  b.textContent = text;
  b.className = "badge" + (state ? " " + state : "");
}

function spark(canvas, points) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const top = Math.max(1, ...points);
  const slots = Math.max(points.length, 10); // the line fills the canvas as the minute fills
  ctx.strokeStyle = "#58a6ff";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = (w - 2) * (slots - points.length + i) / (slots - 1) + 1;
    const y = h - 2 - (h - 4) * v / top;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function render(doc) {
  const seconds = previous ? (doc.time - previous.time) / 1000 : 0;
  const before = new Map((previous ? previous.namespaces : []).map(n => [n.name, n]));
  const s = doc.store;
  badge("store", s.connected === null ? "store: memory" : (s.connected ? "store: Redis connected" : "store: Redis not connected"),
    s.connected === null || s.connected ? "ok" : "bad");
  badge("breakers", s.breakers_open === null ? "breakers: –" : "breakers open: " + s.breakers_open, s.breakers_open ? "bad" : "ok");
  badge("instances", s.instances === null ? "instances: 1" : "instances: " + s.instances);
  badge("config", "config: " + (doc.config_version || "–"));
  badge("build", "build: " + (doc.build || "–"));

  const body = document.querySelector("#namespaces tbody");
  body.replaceChildren();
  const tops = document.getElementById("top");
  tops.replaceChildren();
  for (const n of doc.namespaces) {
    const b = before.get(n.name);
    let rate = NaN, denied = NaN, ratio = NaN;
    let by = "";
    if (b && seconds > 0) {
      rate = (n.allowed + n.denied - b.allowed - b.denied) / seconds;
      denied = (n.denied - b.denied) / seconds;
      const checks = n.allowed + n.denied - b.allowed - b.denied;
      ratio = checks > 0 ? (n.denied - b.denied) / checks : NaN;
      by = Object.keys(n.decided_by).sort()
        .map(k => [k, n.decided_by[k] - ((b.decided_by || {})[k] || 0)])
        .filter(([, v]) => v > 0).map(([k, v]) => k + " " + v).join(", ");
    }
    const h = history.get(n.name) || [];
    if (isFinite(rate)) {
      h.push(rate);
      if (h.length > HISTORY) h.shift();
    }
    history.set(n.name, h);
    const canvas = el("canvas", { width: "160", height: "28" });
    const row = el("tr", { "data-ns": n.name, "data-points": String(h.length) },
      el("td", { class: "name" }, n.name),
      el("td", { class: "rate" }, fmtRate(rate)),
      el("td", { class: "denied" }, fmtRate(denied)),
      el("td", { class: "deny" + (ratio > 0.5 ? " high" : "") }, isFinite(ratio) ? (100 * ratio).toFixed(1) + "%" : "–"),
      el("td", { class: "p50" }, fmtDuration(quantile(0.5, n.buckets, b && b.buckets))),
      el("td", { class: "p99" }, fmtDuration(quantile(0.99, n.buckets, b && b.buckets))),
      el("td", { class: "by" }, by || "–"),
      el("td", { class: "audit" + (n.audit && n.audit.over + n.audit.under > 0 ? " high" : "") },
        n.audit ? n.audit.over + " / " + n.audit.under + " of " + n.audit.checks : "off"),
      el("td", {}, canvas));
    body.append(row);
    spark(canvas, h);

    const list = el("ol");
    for (const e of n.top) list.append(el("li", {}, e.subject + " · " + e.denied + " denied"));
    tops.append(el("div", { class: "top-ns", "data-ns": n.name }, el("h3", {}, n.name),
      n.top.length ? list : el("div", { class: "empty" }, "no subject denied lately")));
  }
  document.getElementById("top-window").textContent = doc.top_window ? "(denials over the last " + doc.top_window + " to twice that)" : "(top-K tracking is off)";
  document.getElementById("status").textContent = "updated " + new Date(doc.time).toLocaleTimeString();
  previous = doc;
}

async function poll() {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const resp = await fetch("data", { headers, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      document.getElementById("login").hidden = false;
      document.getElementById("status").textContent = "the admin token is required";
      if (token) document.getElementById("login-error").textContent = "that token was refused";
      return;
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    document.getElementById("login").hidden = true;
    render(await resp.json());
  } catch (err) {
    document.getElementById("status").textContent = "cannot reach the instance (" + err.message + "); retrying";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("login-error").textContent = "";
});

poll();
