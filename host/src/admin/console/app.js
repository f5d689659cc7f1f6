// The Quiver console: one page per subject, drawn from the admin API's JSON and
// redrawn every two seconds; charts from /v1/history. Text from the broker (names,
// plugin logs) is only ever set as text, never parsed as markup.
"use strict";

const REFRESH_MS = 2000;
const LIMIT_COLOUR = "#d1242f";
const PALETTE = ["#2f6f9f", "#c2571a", "#1a7f37", "#8250df", "#0f7b8a", "#9a6700", "#5c6670", "#bf3989"];

// ---- elements -----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function link(hash, text) {
  return el("a", { href: hash }, text);
}

function route(kind, name) {
  return `#/${kind}/${encodeURIComponent(name)}`;
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "empty" }, empty || "None.");
  const numeric = headers.map((h) => h.endsWith("#"));
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) =>
      el("th", { class: numeric[i] ? "num" : null }, h.replace(/#$/, ""))))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell, i) =>
      el("td", { class: numeric[i] ? "num" : null }, cell))))));
}

function cards(pairs) {
  return el("div", { class: "cards" }, pairs.map(([label, value, cls]) =>
    el("div", { class: "card" }, el("div", { class: "label" }, label),
      el("div", { class: "value " + (cls || "") }, value))));
}

// ---- numbers ------------------------------------------------------------------------

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(Math.abs(n) < 10 ? 2 : 1);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[i];
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`;
}

// ---- the API ------------------------------------------------------------------------

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${path} answered ${response.status}`;
    throw new Error(message);
  }
  return body;
}

async function history(family) {
  const body = await api(`/v1/history?family=${encodeURIComponent(family)}`);
  return (body.series && body.series[family]) || {};
}

// ---- charts -------------------------------------------------------------------------

// A line chart of `series` ({subject: [[ms, value], ...]}); `limits` (same shape) are
// drawn dashed. Each line carries its points, so what is drawn can be checked.
function chart(family, title, series, options) {
  const opts = options || {};
  const limits = opts.limits || {};
  const format = opts.format || fmt;
  const width = 640, height = 180, left = 52, right = 10, top = 10, bottom = 22;
  const all = Object.values(series).concat(Object.values(limits)).flat();
  const figure = el("figure", { class: "chart", "data-chart": family });
  figure.append(el("figcaption", {}, title));
  if (!all.length) {
    figure.append(el("p", { class: "empty" }, "No samples yet."));
    return figure;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  // An all-zero chart still gets a readable scale.
  const v1 = Math.max(...all.map((p) => p[1]), 1) * 1.1;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / v1) * (height - top - bottom);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  root.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  root.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
  for (const [value, label] of [[v1, format(v1)], [v1 / 2, format(v1 / 2)], [0, "0"]]) {
    const tick = svg("text", { class: "tick", x: left - 4, y: y(value) + 3, "text-anchor": "end" });
    tick.textContent = label;
    root.append(tick);
  }
  const span = svg("text", { class: "tick", x: width - right, y: height - 6, "text-anchor": "end" });
  const seconds = (t1 - t0) / 1000;
  span.textContent = seconds < 90 ? `last ${Math.round(seconds)} s` : `last ${Math.round(seconds / 60)} min`;
  root.append(span);
  const legend = el("div", { class: "legend" });
  const draw = (subject, points, index, dashed) => {
    // A limit is drawn in the colour of nothing else, so it is not taken for a series.
    const color = dashed ? LIMIT_COLOUR : PALETTE[index % PALETTE.length];
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const last = points.length ? points[points.length - 1][1] : null;
    root.append(svg("path", {
      class: dashed ? "limit" : "series", d, stroke: color,
      "data-series": subject, "data-last": last === null ? "" : last,
      "data-points": JSON.stringify(points),
    }));
    legend.append(el("span", {},
      el("span", { class: "swatch", style: `background:${color}` }),
      `${subject}${dashed ? " (limit)" : ""}: ${format(last)}`));
  };
  Object.entries(series).forEach(([subject, points], i) => draw(subject, points, i, false));
  Object.entries(limits).forEach(([subject, points], i) => draw(subject, points, i, true));
  figure.append(root, legend);
  return figure;
}

function only(series, subject) {
  return subject in series ? { [subject]: series[subject] } : {};
}

// ---- pages --------------------------------------------------------------------------

const pages = {
  async overview() {
    const [cluster, topics, throughputIn, throughputOut] = await Promise.all([
      api("/v1/cluster"), api("/v1/topics"),
      history("topic_bytes_in_per_sec"), history("topic_bytes_out_per_sec"),
    ]);
    const user = topics.topics.filter((t) => !t.internal);
    const partitions = user.reduce((n, t) => n + t.partitions, 0);
    const fenced = cluster.brokers.filter((b) => b.fenced).length;
    return [
      el("h1", {}, `Cluster ${cluster.cluster_id}`),
      cards([
        ["This broker", cluster.broker],
        ["Controller", cluster.controller === null ? "none" : cluster.controller, cluster.controller === null ? "bad" : ""],
        ["Raft term", cluster.raft.term],
        ["Brokers", `${cluster.brokers.length - fenced} active` + (fenced ? `, ${fenced} fenced` : ""), fenced ? "warn" : ""],
        ["Topics", user.length],
        ["Partitions", partitions],
        ["Under-replicated", cluster.under_replicated.length, cluster.under_replicated.length ? "warn" : "good"],
        ["Offline", cluster.offline.length, cluster.offline.length ? "bad" : "good"],
      ]),
      el("h2", {}, "Brokers"),
      table(["Id", "Kafka", "Cluster (QUIC)", "Rack", "State"], cluster.brokers.map((b) => [
        b.id, b.kafka, b.cluster, b.rack || "–",
        el("span", { class: b.fenced ? "bad" : "good" }, b.fenced ? "fenced" : "active"),
      ])),
      el("h2", {}, "Throughput"),
      el("div", { class: "charts" },
        chart("topic_bytes_in_per_sec", "Bytes in per second, by topic", throughputIn, { format: bytes }),
        chart("topic_bytes_out_per_sec", "Bytes out per second, by topic", throughputOut, { format: bytes })),
    ];
  },

  async topics(name) {
    if (name) return topic(name);
    const { topics } = await api("/v1/topics");
    return [
      el("h1", {}, "Topics"),
      table(["Topic", "Partitions#", "Replication#", "Under-replicated#", "Offline#", "Size here#"],
        topics.filter((t) => !t.internal).map((t) => [
          link(route("topics", t.name), t.name), t.partitions, t.replication_factor,
          el("span", { class: t.under_replicated_partitions ? "warn" : "" }, t.under_replicated_partitions),
          el("span", { class: t.offline_partitions ? "bad" : "" }, t.offline_partitions),
          bytes(t.local_size_bytes),
        ]), "No topics yet: `quiver topic create NAME`."),
    ];
  },

  async groups(name) {
    if (name) return group(name);
    const [{ groups, unavailable }, lag] = await Promise.all([api("/v1/groups"), history("group_lag")]);
    return [
      el("h1", {}, "Consumer groups"),
      ...unavailable.map((u) => el("p", { class: "warn" },
        `Broker ${u.broker} did not answer, so its groups are missing: ${u.reason}`)),
      table(["Group", "State", "Coordinator#", "Members#", "Lag#"], groups.map((g) => [
        link(route("groups", g.group), g.group), g.state, g.coordinator, g.members,
        el("span", { class: g.lag ? "warn" : "" }, fmt(g.lag)),
      ]), "No consumer groups."),
      el("h2", {}, "Lag over time"),
      el("div", { class: "charts" }, chart("group_lag", "Records behind, by group", lag)),
    ];
  },

  async plugins(name) {
    if (name) return plugin(name);
    const [{ plugins }, calls, errors] = await Promise.all([
      api("/v1/plugins"), history("plugin_calls_per_sec"), history("plugin_errors_per_sec"),
    ]);
    return [
      el("h1", {}, "Plugins"),
      table(["Plugin", "Kind", "Version#", "Status", "Calls#", "Records#", "Errors#", "Traps#", "Mean call µs#"],
        plugins.map((p) => [
          link(route("plugins", p.name), p.name), p.kind, p.active_version,
          el("span", { class: p.status.state === "active" ? "good" : "bad" }, p.status.state),
          fmt(p.metrics.calls), fmt(p.metrics.records),
          el("span", { class: p.metrics.errors ? "warn" : "" }, fmt(p.metrics.errors)),
          el("span", { class: p.metrics.traps ? "bad" : "" }, fmt(p.metrics.traps)),
          p.metrics.calls ? fmt(p.metrics.call_time_us / p.metrics.calls) : "–",
        ]), "No plugins deployed: `quiver plugin deploy NAME --kind … --file …`."),
      el("h2", {}, "Calls and errors"),
      el("div", { class: "charts" },
        chart("plugin_calls_per_sec", "Calls per second", calls),
        chart("plugin_errors_per_sec", "Errors and traps per second", errors)),
    ];
  },

  async tenants() {
    const [{ tenants }, produced, fetched, produceLimit, fetchLimit, throttle] = await Promise.all([
      api("/v1/tenants"), history("tenant_produce_bytes_per_sec"), history("tenant_fetch_bytes_per_sec"),
      history("tenant_producer_byte_rate"), history("tenant_consumer_byte_rate"),
      history("tenant_throttle_ms_per_sec"),
    ]);
    const out = [
      el("h1", {}, "Tenants"),
      table(["Tenant", "Prefix", "Principals", "Topics#", "Partitions#", "Stored here#", "Connections here#"],
        tenants.map((t) => [
          t.name, t.prefix, t.principals.join(", "), t.usage.topics.length, t.usage.partitions,
          bytes(t.usage.stored_bytes_here), t.usage.connections_here,
        ]), "No tenants: `quiver tenant create NAME --prefix NAME.`"),
    ];
    for (const t of tenants) {
      out.push(el("h2", {}, `Tenant ${t.name}`), el("div", { class: "charts" },
        chart("tenant_produce_bytes_per_sec", "Produced bytes per second, against its quota",
          only(produced, t.name), { limits: only(produceLimit, t.name), format: bytes }),
        chart("tenant_fetch_bytes_per_sec", "Fetched bytes per second, against its quota",
          only(fetched, t.name), { limits: only(fetchLimit, t.name), format: bytes }),
        chart("tenant_throttle_ms_per_sec", "Throttle imposed, ms per second", only(throttle, t.name))));
    }
    return out;
  },

  async mirrors() {
    const [{ mirrors }, latency, lag] = await Promise.all([
      api("/v1/mirrors"), history("mirror_latency_p99_ms"), history("mirror_lag"),
    ]);
    return [
      el("h1", {}, "Mirrors"),
      table(["Mirror", "Source", "Status", "Runs on#", "Records#", "Behind#", "Latency p50 ms#", "Latency p99 ms#", "Source seen"],
        mirrors.map((m) => [
          m.name, `${m.source_alias} (${m.source})`,
          el("span", { class: m.status === "running" ? "good" : "warn" }, m.status),
          m.runs_on === null ? "–" : m.runs_on,
          m.report ? fmt(m.report.records) : "–", fmt(m.behind),
          m.report ? m.report.latency_p50_ms : "–", m.report ? m.report.latency_p99_ms : "–",
          m.report ? ago(m.report.last_contact_ms) : "–",
        ]), "No mirrors: `quiver mirror create NAME --source HOST:PORT …`."),
      el("h2", {}, "Latency and lag"),
      el("div", { class: "charts" },
        chart("mirror_latency_p99_ms", "Replication latency p99, ms", latency),
        chart("mirror_lag", "Source records not yet copied", lag)),
    ];
  },

  async transforms() {
    const [{ transforms }, lag, latency] = await Promise.all([
      api("/v1/transforms"), history("transform_lag"), history("transform_latency_p99_ms"),
    ]);
    return [
      el("h1", {}, "Transforms"),
      table(["Transform", "Plugin", "Input", "Outputs", "Delivery", "Status", "Lag#", "Latency p50 ms#", "Latency p99 ms#", "In#", "Out#", "Dead letters#"],
        transforms.map((t) => [
          t.name, t.plugin, t.input, t.outputs.join(", "), t.delivery,
          el("span", { class: t.status === "running" ? "good" : "warn" }, t.status),
          fmt(t.lag), fmt(t.latency_p50_ms), fmt(t.latency_p99_ms),
          fmt(t.records_in), fmt(t.records_out),
          el("span", { class: t.dead_letters ? "warn" : "" }, fmt(t.dead_letters)),
        ]), "No transforms: `quiver transform deploy NAME --plugin … --input … --output …`."),
      el("h2", {}, "Lag and latency over time"),
      el("div", { class: "charts" },
        chart("transform_lag", "Input records not yet transformed", lag),
        chart("transform_latency_p99_ms", "Input to output latency p99 (worst partition), ms", latency)),
    ];
  },
};

async function topic(name) {
  const [t, bytesIn, bytesOut] = await Promise.all([
    api(`/v1/topics/${encodeURIComponent(name)}`),
    history("topic_bytes_in_per_sec"), history("topic_bytes_out_per_sec"),
  ]);
  const configs = Object.entries(t.configs);
  return [
    el("h1", {}, `Topic ${t.name}`),
    cards([["Partitions", t.partitions], ["Replication", t.replication_factor],
      ["Under-replicated", t.under_replicated_partitions, t.under_replicated_partitions ? "warn" : "good"],
      ["Offline", t.offline_partitions, t.offline_partitions ? "bad" : "good"],
      ["Size here", bytes(t.local_size_bytes)]]),
    el("h2", {}, "Partitions"),
    table(["Partition#", "Leader#", "Replicas", "ISR", "Start offset#", "High watermark#", "End offset#", "Size#"],
      t.partition_details.map((p) => [
        p.partition, p.leader === null ? el("span", { class: "bad" }, "none") : p.leader,
        p.replicas.join(", "),
        el("span", { class: p.under_replicated ? "warn" : "" }, p.isr.join(", ")),
        fmt(p.log_start_offset), fmt(p.high_watermark), fmt(p.log_end_offset), bytes(p.size_bytes),
      ])),
    el("h2", {}, "Configuration overrides"),
    table(["Key", "Value"], configs, "Broker defaults for every setting."),
    el("h2", {}, "Throughput"),
    el("div", { class: "charts" },
      chart("topic_bytes_in_per_sec", "Bytes in per second", only(bytesIn, name), { format: bytes }),
      chart("topic_bytes_out_per_sec", "Bytes out per second", only(bytesOut, name), { format: bytes })),
  ];
}

async function group(name) {
  const [g, lag] = await Promise.all([api(`/v1/groups/${encodeURIComponent(name)}`), history("group_lag")]);
  return [
    el("h1", {}, `Group ${g.group}`),
    cards([["State", g.state], ["Members", g.members.length], ["Lag", fmt(g.lag), g.lag ? "warn" : "good"],
      ["Coordinator", g.coordinator], ["Protocol", g.protocol || "–"]]),
    el("h2", {}, "Members"),
    table(["Member", "Client id", "Host", "Assigned"], g.members.map((m) => [
      m.member_id, m.client_id, m.client_host,
      m.assignment.map((a) => `${a.topic}/${a.partition}`).join(", ") || "–",
    ]), "No members: the group is empty."),
    el("h2", {}, "Offsets"),
    table(["Topic", "Partition#", "Committed#", "High watermark#", "Lag#"], g.offsets.map((o) => [
      o.topic, o.partition, fmt(o.committed_offset), fmt(o.high_watermark),
      el("span", { class: o.lag ? "warn" : "" }, fmt(o.lag)),
    ]), "No committed offsets."),
    el("h2", {}, "Lag over time"),
    el("div", { class: "charts" }, chart("group_lag", "Records behind", only(lag, name))),
  ];
}

async function plugin(name) {
  const [p, logs, calls, errors] = await Promise.all([
    api(`/v1/plugins/${encodeURIComponent(name)}`),
    api(`/v1/plugins/${encodeURIComponent(name)}/logs?lines=100`),
    history("plugin_calls_per_sec"), history("plugin_errors_per_sec"),
  ]);
  const failed = p.status.state !== "active";
  return [
    el("h1", {}, `Plugin ${p.name}`),
    cards([["Kind", p.kind], ["Serving version", p.active_version],
      ["Status", p.status.state, failed ? "bad" : "good"],
      ["Calls", fmt(p.metrics.calls)], ["Errors", fmt(p.metrics.errors), p.metrics.errors ? "warn" : ""],
      ["Traps", fmt(p.metrics.traps), p.metrics.traps ? "bad" : ""]]),
    failed && p.status.reason ? el("p", { class: "error-box" }, p.status.reason) : null,
    el("div", { class: "charts" },
      chart("plugin_calls_per_sec", "Calls per second", only(calls, name)),
      chart("plugin_errors_per_sec", "Errors and traps per second", only(errors, name))),
    el("h2", {}, "Versions"),
    table(["Version#", "Deployed", "Config"], p.versions.map((v) => [
      v.version, new Date(v.deployed_at_ms).toISOString(),
      (v.config || []).map((kv) => kv.join("=")).join(", ") || "–",
    ])),
    el("h2", {}, "Recent log"),
    logs.lines.length
      ? el("pre", { class: "logs" }, logs.lines.map((l) =>
          `${new Date(l.at_ms).toISOString()} ${l.stream.padEnd(6)} ${l.line}\n`).join(""))
      : el("p", { class: "empty" }, "Nothing logged."),
  ];
}

// ---- the loop -----------------------------------------------------------------------

let generation = 0;

async function render() {
  const mine = ++generation;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const page = pages[parts[0]] ? parts[0] : "overview";
  const name = parts[1] ? decodeURIComponent(parts.slice(1).join("/")) : null;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  const status = document.getElementById("status");
  const main = document.getElementById("main");
  try {
    const content = await pages[page](name);
    if (mine !== generation) return;
    main.replaceChildren(...content.filter(Boolean));
    main.dataset.page = page;
    main.dataset.loaded = String(Date.now());
    status.className = "status";
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (mine !== generation) return;
    status.className = "status error";
    status.textContent = "not updating";
    main.replaceChildren(el("h1", {}, page), el("p", { class: "error-box" }, e.message));
    main.dataset.page = page;
  }
}

window.addEventListener("hashchange", render);
render();
setInterval(() => { if (!document.hidden) render(); }, REFRESH_MS);
