"use strict";
(function () {
  var REFRESH_MS = 5000;
  var SVG = "http://www.w3.org/2000/svg";
  var openJob = (location.hash.match(/^#job=([0-9_+]+)$/) || [])[1] || "";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }
  function text(value) { return document.createTextNode(value === null || value === undefined ? "" : String(value)); }
  function span(cls, value) { return el("span", {"class": cls, text: value === null || value === undefined ? "" : String(value)}); }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function word(state) { return (String(state || "UNKNOWN").split(" ")[0] || "UNKNOWN").replace(/[^A-Z_]/g, ""); }
  function span_of(seconds) {
    if (seconds === null || seconds === undefined) { return ""; }
    var s = Math.round(seconds), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) { return d + "d" + h + "h"; }
    if (h) { return h + "h" + (m < 10 ? "0" : "") + m + "m"; }
    if (m) { return m + "m"; }
    return s + "s";
  }
  function get(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (answer) {
      if (!answer.ok && answer.status !== 503) { throw new Error(url + ": HTTP " + answer.status); }
      return answer.json();
    });
  }

  function progressOf(row) {
    var p = row.progress;
    if (!p) { return {fraction: null, label: "", eta: ""}; }
    var label = p.fraction !== null && p.fraction !== undefined ? Math.round(p.fraction * 100) + "%" : p.done + " " + (p.unit || "");
    var eta = p.eta_seconds !== null && p.eta_seconds !== undefined ? "ETA " + span_of(p.eta_seconds) + (p.eta_confident ? "" : "?") : "";
    return {fraction: p.fraction, label: label, eta: eta};
  }

  function jobCard(row) {
    var progress = progressOf(row);
    var id = row.current_job && row.current_job !== row.job_id ? row.job_id + " → " + row.current_job : row.job_id;
    var card = el("article", {"class": "job", "tabindex": "0", "data-job-id": row.job_id, "data-state": word(row.state)}, [
      el("div", {"class": "top"}, [
        span("id", id), span("name", row.name || "-"), span("state " + word(row.state), row.state || "UNKNOWN"),
        progress.label ? span("", progress.label) : null, progress.eta ? span("muted", progress.eta) : null
      ].concat((row.flags || []).map(function (flag) { return span("chip bad", flag); })))
    ]);
    if (progress.fraction !== null && progress.fraction !== undefined) {
      var fill = el("div");
      fill.style.width = Math.max(0, Math.min(100, progress.fraction * 100)).toFixed(1) + "%";
      card.appendChild(el("div", {"class": "bar", "role": "progressbar", "aria-valuenow": Math.round(progress.fraction * 100),
                                  "aria-valuemin": "0", "aria-valuemax": "100"}, [fill]));
    }
    card.appendChild(el("div", {"class": "meta"}, [
      span("", "monitor " + (row.monitor || "-")), span("", "elapsed " + (row.elapsed || "-")),
      span("", "notify " + (row.notification || "-")),
      row.categories && row.categories.length ? span("", "causes " + row.categories.join(", ")) : null
    ]));
    if (row.problem) { card.appendChild(el("div", {"class": "problem", text: row.problem})); }
    function open() { openJob = row.job_id; location.hash = "job=" + row.job_id; loadDetail(); }
    card.addEventListener("click", open);
    card.addEventListener("keydown", function (event) { if (event.key === "Enter") { open(); } });
    return card;
  }

  function chart(points, title, format) {
    var box = el("div");
    box.appendChild(el("h3", {text: title}));
    if (!points || points.length < 2) {
      box.appendChild(el("p", {"class": "muted", text: points && points.length ? "one sample so far" : "not recorded"}));
      return box;
    }
    var w = 320, h = 100, pad = 4;
    var t0 = points[0][0], t1 = points[points.length - 1][0] || t0 + 1;
    var vmax = Math.max.apply(null, points.map(function (p) { return p[1]; })) || 1;
    if (format === "percent") { vmax = Math.max(vmax, 1); }
    var path = points.map(function (p, i) {
      var x = pad + (w - 2 * pad) * (t1 === t0 ? 0 : (p[0] - t0) / (t1 - t0));
      var y = h - pad - (h - 2 * pad) * (p[1] / vmax);
      return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }).join(" ");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", title);
    var line = document.createElementNS(SVG, "path");
    line.setAttribute("d", path);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0969da");
    line.setAttribute("stroke-width", "2");
    svg.appendChild(line);
    box.appendChild(svg);
    var last = points[points.length - 1][1];
    box.appendChild(el("p", {"class": "muted", text: "last: " + (format === "percent" ? Math.round(last * 100) + "%" : last) +
                                                   ", over " + span_of(t1 - t0)}));
    return box;
  }

  function table(headers, rows) {
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, headers.map(function (h) { return el("th", {text: h}); }))]),
      el("tbody", {}, rows.map(function (cells) {
        return el("tr", {}, cells.map(function (c) { return el("td", {text: c === null || c === undefined ? "" : String(c)}); }));
      }))
    ]);
  }

  function renderDetail(data) {
    var box = document.getElementById("detail");
    clear(box);
    var row = data.job || {}, record = data.record || {};
    var close = el("button", {text: "close"});
    close.addEventListener("click", function () { openJob = ""; history.replaceState(null, "", location.pathname + location.search); box.hidden = true; });
    box.appendChild(el("h2", {}, [text("Job " + row.job_id + " "), span("name", row.name || ""), text(" "),
                                  span("state " + word(row.state), row.state || "")]));
    box.appendChild(close);
    if (data.problem) { box.appendChild(el("p", {"class": "problem", text: data.problem})); }
    if (row.problem) { box.appendChild(el("p", {"class": "problem", text: row.problem})); }
    var findings = record.findings || [];
    box.appendChild(el("h3", {text: "Findings"}));
    box.appendChild(findings.length ? table(["cause", "severity", "line"], findings.map(function (f) { return [f.category, f.severity, f.line]; }))
                                    : el("p", {"class": "muted", text: record.final ? "none" : "none yet (analysed when the job ends)"}));
    var chain = record.chain;
    if (chain) {
      box.appendChild(el("h3", {text: "Chain: round " + chain.round + ", " + chain.attempts.length + " attempt(s)"}));
      box.appendChild(table(["job", "round", "state", "exit", "elapsed", "decision"], chain.attempts.map(function (a) {
        return [a.job_id, a.round, a.state || "running", a.exit_code, a.elapsed, a.decision];
      })));
      if (chain.rounds && chain.rounds.length) {
        box.appendChild(table(["round", "jobs", "failed tasks", "retried", "decision"], chain.rounds.map(function (r) {
          return [r.number, (r.jobs || []).join(","), r.failed_tasks, r.retried_tasks, r.decision];
        })));
      }
    }
    box.appendChild(chart(data.progress, "Progress over time", "percent"));
    var peak = record.final && record.final.max_rss_bytes;
    var memory = chart(data.memory, "Memory over time");
    if (peak) { memory.appendChild(el("p", {"class": "muted", text: "peak " + (peak / 1048576).toFixed(1) + " MiB"})); }
    box.appendChild(memory);
    box.appendChild(el("h3", {text: "Events"}));
    var events = data.events || [];
    box.appendChild(events.length ? table(["event", "route", "sinks"], events.map(function (e) {
      return [e.key, e.route, Object.keys(e.deliveries).map(function (k) { return k + ": " + e.deliveries[k]; }).join(", ")];
    })) : el("p", {"class": "muted", text: "none"}));
    (data.logs || []).forEach(function (log) {
      box.appendChild(el("h3", {text: "Log " + log.path}));
      box.appendChild(log.missing ? el("p", {"class": "muted", text: "not there (yet)"}) : el("pre", {text: (log.lines || []).join("\n")}));
    });
    box.hidden = false;
  }

  function loadDetail() {
    if (!openJob) { return; }
    get("/jobs/" + encodeURIComponent(openJob)).then(renderDetail).catch(function (error) {
      var box = document.getElementById("detail");
      clear(box);
      box.appendChild(el("p", {"class": "problem", text: String(error)}));
      box.hidden = false;
    });
  }

  function renderJobs(data) {
    var list = document.getElementById("jobs");
    clear(list);
    (data.jobs || []).forEach(function (row) { list.appendChild(jobCard(row)); });
    document.getElementById("empty").hidden = (data.count || 0) > 0;
    var states = {};
    (data.jobs || []).forEach(function (row) { var w = word(row.state); states[w] = (states[w] || 0) + 1; });
    document.getElementById("summary").textContent = data.count + " job(s)" +
      Object.keys(states).sort().map(function (k) { return ", " + states[k] + " " + k; }).join("");
    var warning = document.getElementById("warning");
    warning.hidden = !data.warning;
    warning.textContent = data.warning || "";
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  }

  function renderHealth(data) {
    var chip = document.getElementById("health");
    chip.textContent = data.status === "ok" ? "healthy" : "degraded";
    chip.className = "chip " + (data.status === "ok" ? "ok" : "bad");
    chip.title = (data.reasons || []).join("; ");
  }

  function refresh() {
    get("/jobs").then(renderJobs).catch(function (error) {
      document.getElementById("summary").textContent = String(error);
    });
    get("/healthz").then(renderHealth).catch(function () {});
    loadDetail();
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
