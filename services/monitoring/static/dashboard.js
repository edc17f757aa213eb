"use strict";
// Every value from the API reaches the page through textContent only, never as HTML.
const REFRESH_MS = 2500;
let flowOrderId = null;

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value == null ? "" : String(value);
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.appendChild(child);
  return node;
}

function empty(text) { return el("span", {className: "empty", text: text}); }

function badgeClass(value) { return String(value).replace(/[^a-z_]/g, ""); }

function badge(value) { return el("span", {className: "badge " + badgeClass(value), text: value}); }

function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleTimeString();
}

function fmtNumber(value, digits) { return value == null ? "–" : Number(value).toFixed(digits); }

// The key lives in this tab's sessionStorage and travels as a header, never as a cookie, so no
// other site can make the browser use it.
const KEY_ITEM = "monitoringKey";
let refreshTimer = null;

async function getJson(path) {
  const key = sessionStorage.getItem(KEY_ITEM);
  const headers = {"Accept": "application/json"};
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, {headers: headers, cache: "no-store", credentials: "omit"});
  if (response.status === 401 && key) signOut("Your key was refused (unknown, revoked or expired).");
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : "HTTP " + response.status;
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return body;
}

function renderHealth(status) {
  const badgeNode = document.getElementById("overall-status");
  badgeNode.textContent = status.overall;
  badgeNode.className = "badge " + badgeClass(status.overall);
  const names = Object.keys(status.services || {});
  const tiles = names.map((name) => {
    const s = status.services[name];
    const meta = [s.http_status ? "HTTP " + s.http_status : null,
                  s.latency_ms != null ? Math.round(s.latency_ms) + " ms" : null].filter(Boolean).join(" · ");
    const children = [el("div", {className: "name", text: name}), badge(s.status),
                      el("div", {className: "meta", text: meta})];
    if (s.error) children.push(el("div", {className: "meta", text: s.error}));
    return el("div", {className: "tile " + badgeClass(s.status), "data-service": name}, children);
  });
  document.getElementById("service-health").replaceChildren(...(tiles.length ? tiles : [empty("No services polled yet.")]));
}

function renderPerformance(perf) {
  const rate = perf.orders_per_minute || {};
  document.getElementById("orders-per-minute").textContent = fmtNumber(rate["1m"], 2);
  document.getElementById("orders-per-minute-detail").textContent =
    "1 min " + fmtNumber(rate["1m"], 2) + " · 5 min " + fmtNumber(rate["5m"], 2) + " · 15 min " + fmtNumber(rate["15m"], 2);
  document.getElementById("success-rate").textContent =
    perf.success_rate == null ? "–" : (perf.success_rate * 100).toFixed(1) + "%";
  const t = perf.totals || {};
  document.getElementById("success-rate-detail").textContent =
    (t.orders_completed || 0) + " completed · " + (t.orders_failed || 0) + " failed · " + (t.orders_created || 0) + " created";
  const d = perf.order_duration_s || {};
  document.getElementById("order-duration").textContent = d.avg == null ? "–" : fmtNumber(d.avg, 2) + " s";
  document.getElementById("order-duration-detail").textContent =
    "p50 " + fmtNumber(d.p50, 2) + " · p95 " + fmtNumber(d.p95, 2) + " · p99 " + fmtNumber(d.p99, 2) + " s";
}

function orderLink(orderId) {
  const button = el("button", {className: "link", type: "button", text: orderId, "data-order-id": orderId});
  button.addEventListener("click", () => showFlow(orderId));
  return button;
}

function renderOrders(targetId, orders, emptyText) {
  const target = document.getElementById(targetId);
  if (!orders.length) { target.replaceChildren(empty(emptyText)); return; }
  const head = el("tr", {}, ["Order", "Status", "Last event", "Reason", "Updated"].map((h) => el("th", {text: h})));
  const rows = orders.map((o) => el("tr", {"data-order-id": o.order_id}, [
    el("td", {}, [orderLink(o.order_id)]), el("td", {}, [badge(o.status)]),
    el("td", {text: o.last_event || "–"}), el("td", {text: o.failure_reason || ""}),
    el("td", {text: fmtTime(o.updated)}),
  ]));
  target.replaceChildren(el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]));
}

function renderAlerts(alerts) {
  const target = document.getElementById("alerts");
  if (!alerts.length) { target.replaceChildren(empty("No alerts.")); return; }
  target.replaceChildren(el("ul", {}, alerts.map((a) =>
    el("li", {"data-alert": a.name}, [badge(a.severity), document.createTextNode(" " + a.message)]))));
}

function renderTimeline(timeline) {
  const header = el("div", {}, [
    el("strong", {text: timeline.order_id}), document.createTextNode(" "), badge(timeline.status),
    document.createTextNode(timeline.failure_reason ? " reason: " + timeline.failure_reason : ""),
    el("span", {className: "sub", text: "  duration " + fmtNumber(timeline.duration_s, 3) + " s"}),
  ]);
  const items = timeline.events.map((e) => {
    const cls = /Failed|Released|Refunded/.test(e.event_type) ? "bad" : (e.event_type === "OrderCompleted" ? "good" : "");
    const parts = [el("strong", {text: e.event_type}),
                   el("span", {className: "sub", text: "  " + fmtTime(e.timestamp) + " · " + e.source + " · " + e.topic})];
    if (e.detail) parts.push(el("div", {className: "sub", text: e.detail}));
    return el("li", {className: cls, "data-event-type": e.event_type}, parts);
  });
  document.getElementById("flow-view").replaceChildren(header, el("ol", {className: "steps"}, items));
}

async function loadFlow() {
  if (!flowOrderId || !sessionStorage.getItem(KEY_ITEM)) return;
  try {
    renderTimeline(await getJson("/timelines/" + encodeURIComponent(flowOrderId)));
  } catch (err) {
    const text = err.status === 404 ? "No events seen for order " + flowOrderId + " (yet)." : "Could not load the timeline: " + err.message;
    document.getElementById("flow-view").replaceChildren(empty(text));
  }
}

function showFlow(orderId) {
  flowOrderId = String(orderId).trim() || null;
  document.getElementById("flow-order-id").value = flowOrderId || "";
  if (flowOrderId) history.replaceState(null, "", "?order=" + encodeURIComponent(flowOrderId));
  loadFlow();
}

async function refresh() {
  const jobs = [
    getJson("/status").then(renderHealth),
    getJson("/performance").then(renderPerformance),
    getJson("/orders/recent?limit=15").then((b) => renderOrders("recent-orders", b.orders, "No orders yet.")),
    getJson("/orders/recent?status=failed&limit=10").then((b) => renderOrders("recent-failures", b.orders, "No failed orders.")),
    getJson("/dlq?limit=0").then((b) => { document.getElementById("dlq-count").textContent = String(b.total); }),
    getJson("/alerts").then((b) => renderAlerts(b.alerts)),
    loadFlow(),
  ];
  const results = await Promise.allSettled(jobs);
  const failed = results.filter((r) => r.status === "rejected").length;
  document.getElementById("connection-status").textContent =
    failed ? "update incomplete (" + failed + " request(s) failed) · " + new Date().toLocaleTimeString()
           : "updated " + new Date().toLocaleTimeString();
  if (sessionStorage.getItem(KEY_ITEM)) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

function signOut(message) {
  sessionStorage.removeItem(KEY_ITEM);
  clearTimeout(refreshTimer);
  document.getElementById("board").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
  document.getElementById("connection-status").textContent = "signed out";
}

async function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  try {
    await getJson("/status");
  } catch (err) {
    signOut(err.status === 403 ? "This key lacks the monitoring:read scope." : "Sign-in failed: " + err.message);
    return;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("board").hidden = false;
  document.getElementById("sign-out").hidden = false;
  refresh();
}

document.getElementById("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = document.getElementById("signin-key");
  const key = field.value.trim();
  field.value = "";
  if (key) signIn(key);
});
document.getElementById("sign-out").addEventListener("click", () => signOut(""));

document.getElementById("flow-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showFlow(document.getElementById("flow-order-id").value);
});
const initial = new URLSearchParams(location.search).get("order");
if (initial) showFlow(initial);
const stored = sessionStorage.getItem(KEY_ITEM);
if (stored) signIn(stored); else signOut("");
