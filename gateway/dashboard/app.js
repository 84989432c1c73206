// hopgate dashboard: polls the admin API and draws routes, instances,
// discovery state and per-hop trace waterfalls. Plain JavaScript, no
// dependencies; every text goes through textContent.
"use strict";

const ROUTES_EVERY = 1000;
const TRACES_EVERY = 3000;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtSeconds(s) {
  if (s === undefined || s === null) return "–";
  if (s < 1) return "now";
  if (s < 120) return Math.round(s) + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function fmtAge(s) {
  if (s === undefined || s === null) return "–";
  if (s < 120) return s.toFixed(0) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function fmtMs(ms) {
  if (ms === undefined || ms === null) return "–";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 100) return ms.toFixed(1) + " ms";
  if (ms < 10000) return ms.toFixed(0) + " ms";
  return (ms / 1000).toFixed(1) + " s";
}

function fmtRate(r) {
  if (!r) return "–";
  return r.rps < 10 ? r.rps.toFixed(1) : r.rps.toFixed(0);
}

function badge(kind, text) {
  return el("span", { class: "badge " + kind, text });
}

// ---- routes and discovery ----

let lastDoc = null;

function renderDiscovery(doc) {
  const d = doc.discovery;
  $("d-index").textContent = d && d.consul_index ? d.consul_index : doc.index || "–";
  $("d-age").textContent = d ? fmtAge(d.snapshot_age_seconds) : "–";
  $("d-contact").textContent = d ? fmtSeconds(d.last_contact_seconds) : "–";
  $("d-count").textContent = d ? d.services + " / " + d.instances : "–";
  $("d-errors").textContent = d ? d.errors : "–";
  const stale = $("stale");
  if (d && d.stale) {
    stale.hidden = false;
    stale.textContent = "Stale: Consul has not answered for " + fmtAge(d.stale_seconds) +
      " (" + (d.last_error || "error") + "). The last good routes keep serving.";
  } else if (!doc.ready) {
    stale.hidden = false;
    stale.textContent = "Not ready: waiting for the first complete discovery snapshot.";
  } else {
    stale.hidden = true;
    stale.textContent = "";
  }
}

function instanceRow(inst) {
  let health;
  if (inst.ejected) health = badge("bad", "ejected");
  else if (inst.health === "passing") health = badge("ok", "passing");
  else health = badge("warn", inst.health);
  const state = inst.ejected
    ? "out until " + new Date(inst.ejected_until).toLocaleTimeString()
    : "in rotation";
  return el("tr", { "data-instance": inst.id },
    el("th", { scope: "row" }, inst.id),
    el("td", {}, inst.address + ":" + inst.port),
    el("td", { class: "hide-narrow" }, inst.node),
    el("td", {}, health),
    el("td", { class: "num hide-narrow" }, inst.weight),
    el("td", { class: "hide-narrow" }, state),
    el("td", { class: "num hide-narrow" }, inst.inflight),
    el("td", { class: "num" }, fmtRate(inst.rate)),
    el("td", { class: "num" }, fmtMs(inst.rate && inst.rate.p99_ms)));
}

function routeSection(r, i) {
  const headId = "route-h-" + i;
  const head = el("div", { class: "route-head" },
    el("h3", { id: headId }, r.route),
    el("span", { class: "meta" }, "service ", el("strong", {}, r.service)),
    el("span", { class: "meta" }, "policy " + r.policy),
    el("span", { class: "meta" }, fmtRate(r.rate) + " req/s"),
    el("span", { class: "meta" }, "p99 " + fmtMs(r.rate && r.rate.p99_ms)),
    el("span", { class: "meta" }, r.inflight + " in flight"),
    el("span", { class: "meta" }, "retries " + r.counts.retries + ", ejections " + r.counts.ejections),
    r.panic ? badge("bad", "panic mode") : null,
    r.critical > 0 ? badge("warn", r.critical + " critical in Consul") : null);
  const rows = r.instances.map(instanceRow);
  if (rows.length === 0) {
    rows.push(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No routable instance")));
  }
  const table = el("table", {},
    el("caption", {}, "Instances of route " + r.route),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Instance"),
      el("th", { scope: "col" }, "Address"),
      el("th", { scope: "col", class: "hide-narrow" }, "Consul node"),
      el("th", { scope: "col" }, "Health"),
      el("th", { scope: "col", class: "num hide-narrow" }, "Weight"),
      el("th", { scope: "col", class: "hide-narrow" }, "Ejection"),
      el("th", { scope: "col", class: "num hide-narrow" }, "In flight"),
      el("th", { scope: "col", class: "num" }, "Req/s"),
      el("th", { scope: "col", class: "num" }, "p99"))),
    el("tbody", {}, ...rows));
  return el("section", { class: "route", "data-route": r.route, "aria-labelledby": headId },
    head, el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": "Instances of " + r.route }, table));
}

function renderRoutes(doc) {
  const list = $("route-list");
  if (doc.routes.length === 0) {
    list.replaceChildren(el("p", { class: "muted" }, "No routes: no service opts in with a gateway.route tag yet."));
  } else {
    list.replaceChildren(...doc.routes.map(routeSection));
  }
  const total = doc.routes.reduce((n, r) => n + r.instances.length, 0);
  const rps = doc.routes.reduce((n, r) => n + (r.rate ? r.rate.rps : 0), 0);
  $("status").textContent = (doc.ready ? "ready" : "not ready") + " · " + doc.routes.length +
    " route(s) · " + total + " instance(s) · " + (doc.metrics ? rps.toFixed(1) + " req/s" : "metrics off") +
    " · updated " + new Date(doc.time).toLocaleTimeString();
  renderRouteChoice(doc);
}

async function pollRoutes() {
  try {
    const resp = await fetch("/api/dashboard", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const doc = await resp.json();
    lastDoc = doc;
    renderDiscovery(doc);
    renderRoutes(doc);
  } catch (err) {
    $("status").textContent = "cannot reach the gateway's admin API (" + err.message + "); retrying";
  } finally {
    setTimeout(pollRoutes, ROUTES_EVERY);
  }
}

// ---- traces ----

function renderRouteChoice(doc) {
  const sel = $("trace-route");
  const want = doc.routes.map((r) => r.route);
  const have = Array.from(sel.options).map((o) => o.value);
  if (want.join("\n") === have.join("\n")) return;
  const current = sel.value;
  sel.replaceChildren(...want.map((r) => el("option", { value: r }, r)));
  if (want.includes(current)) sel.value = current;
  if (have.length === 0 && want.length > 0) pollTraces(true);
}

function hopClass(hop, trace) {
  const cls = ["hop"];
  if (hop.kind === "client") cls.push("client");
  else if (hop.service !== trace.service) cls.push("backend");
  else cls.push("server");
  if (hop.error) cls.push("error");
  return cls.join(" ");
}

function hopLabel(hop) {
  let what = hop.operation;
  if (hop.kind === "client") {
    what = "attempt " + (hop.attempt || "?") + " → " + (hop.instance || hop.peer || "?");
    if (hop.retry_reason) what += " (retry: " + hop.retry_reason + ")";
  }
  return what;
}

function traceItem(t) {
  const total = Math.max(t.duration_ms, 0.001);
  const hops = t.hops.map((h) => {
    const left = (h.offset_ms / total) * 100;
    const width = Math.max((h.duration_ms / total) * 100, 0.5);
    const label = hopLabel(h);
    const status = h.status ? " · " + h.status : "";
    const desc = h.service + ": " + label + status + ", starts at " + fmtMs(h.offset_ms) + ", takes " + fmtMs(h.duration_ms);
    const bar = el("div", { class: "hop-bar" });
    bar.style.left = left + "%";
    bar.style.width = width + "%";
    const time = el("span", { class: "hop-time", "aria-hidden": "true" }, fmtMs(h.duration_ms));
    const labelEl = el("div", { class: "hop-label", title: desc },
      "\u00a0".repeat(h.depth * 2), el("span", { class: "svc" }, h.service), " " + label + status);
    return el("li", { class: hopClass(h, t), "aria-label": desc, "data-span": h.span_id },
      labelEl, el("div", { class: "hop-track", "aria-hidden": "true" }, bar), time);
  });
  const when = new Date(t.start).toLocaleTimeString();
  const head = el("div", { class: "trace-head" },
    el("strong", {}, t.operation),
    el("span", { class: "muted" }, when),
    el("span", {}, fmtMs(t.duration_ms)),
    t.status ? badge(t.status >= 500 ? "bad" : t.status >= 400 ? "warn" : "ok", String(t.status)) : null,
    el("span", {}, t.hops.length + " hops"),
    el("code", { class: "hide-narrow" }, t.trace_id),
    t.url ? el("a", { href: t.url, target: "_blank", rel: "noopener noreferrer" }, "Open in Jaeger") : null);
  return el("li", { class: "trace", "data-trace-id": t.trace_id, "data-hops": t.hops.length,
    "aria-label": "Trace " + t.operation + " at " + when + ", " + t.hops.length + " hops" },
    head, el("ol", { class: "hops", "aria-label": "Hops, in order" }, ...hops));
}

let traceTimer = null;

async function pollTraces(once) {
  const sel = $("trace-route");
  const note = $("trace-note");
  if (lastDoc && !lastDoc.traces) {
    note.textContent = "No Jaeger configured: start the gateway with -jaeger-query http://HOST:16686.";
  } else if (sel.value !== "") {
    try {
      const resp = await fetch("/api/traces?limit=5&route=" + encodeURIComponent(sel.value), { cache: "no-store" });
      const doc = await resp.json();
      if (doc.error) {
        note.textContent = doc.error;
      } else {
        note.textContent = doc.traces.length === 0
          ? "No traces for this route in the last hour yet: send a request through the gateway."
          : "Newest first, from Jaeger.";
        $("trace-list").replaceChildren(...doc.traces.map(traceItem));
      }
    } catch (err) {
      note.textContent = "cannot read traces (" + err.message + "); retrying";
    }
  }
  if (once !== true) traceTimer = setTimeout(pollTraces, TRACES_EVERY);
}

document.addEventListener("DOMContentLoaded", () => {
  $("trace-route").addEventListener("change", () => {
    $("trace-list").replaceChildren();
    pollTraces(true);
  });
  pollRoutes();
  pollTraces();
});
