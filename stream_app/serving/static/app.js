"use strict";
// The live page: reads /api/rates every 2 s and draws what the worker sees, with the
// charts drawn by uPlot (vendored, see static/vendor/uplot/VERSION).
// Every value is set as text or as an attribute through the DOM, never parsed as markup:
// channel, segment, campaign_type, product_line and the alerts' fields come from producers
// (uPlot sets its legend labels and values as text too).
// Times: every time on the page is UTC and says whether it is event time (the events'
// own timestamps, how far the stream has got) or wall-clock time.

const ALL = "__all__";
const CHART_WINDOWS = 36;
const COLORS = ["#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#56ccf2", "#6fcf97",
                "#bb6bd9", "#f2c94c", "#828282"];
// Band shading on the charts, lightest for the lowest band.
const BAND_FILL = { low: "rgba(214,69,69,0.10)", moderate: "rgba(232,163,61,0.12)",
                    good: "rgba(87,165,90,0.12)", excellent: "rgba(31,122,61,0.14)",
                    healthy: "rgba(87,165,90,0.12)", exceptional: "rgba(31,122,61,0.14)" };
const MONEY_UNIT = "currency units";
const $ = (id) => document.getElementById(id);
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
const money = (v) => (v === null || v === undefined ? "–"
  : (v > 0 ? "+" : "") + v.toFixed(2));
let windowLabel = new URLSearchParams(location.search).get("window");
let which = new URLSearchParams(location.search).get("show") || "closed";
const charts = new Map();

// "2026-11-22T10:15:00.000Z" -> "10:15 UTC" (with the date when `withDate`).
function utc(iso, withDate = false, seconds = false) {
  if (!iso) return "–";
  const text = new Date(iso).toISOString();
  const time = text.slice(11, seconds ? 19 : 16);
  return (withDate ? text.slice(0, 10) + " " : "") + time + " UTC";
}

function clockOf(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// An element with attributes (set as values, never parsed) and children (nodes or text).
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function headRow(...names) {
  return element("thead", {}, element("tr", {}, ...names.map((name) => element("th", {}, name))));
}

async function view(name) {
  const query = new URLSearchParams({ view: name, windows: String(CHART_WINDOWS) });
  if (windowLabel) query.set("window", windowLabel);
  const response = await fetch("/api/rates?" + query);
  if (!response.ok) throw new Error((await response.json()).error);
  return response.json();
}

function rowOf(windowDoc, first, second) {
  const dims = Object.keys(windowDoc.rows[0] || {}).slice(0, 2);
  return (windowDoc.rows || []).find((r) => r[dims[0]] === first && r[dims[1]] === second);
}

// The window the tiles, grid and table show: by default the latest closed one, whose
// counts are complete but for late conversions; a window that has just opened has few
// offers and would look like a drop. "current" shows the filling one, marked as such.
// A window with no rows in this view (purchases only, say) is passed over.
function shown(doc) {
  const closed = doc.windows.find((w) => w.closed && w.rows.length);
  const filling = doc.windows.find((w) => w.current);
  if (which === "current") return filling || doc.windows[0] || { rows: [] };
  return closed || filling || doc.windows[0] || { rows: [] };
}

// Another view's window at the same time as `w`, so that tiles side by side agree.
function alongside(doc, w) {
  return doc.windows.find((other) => other.window_start === w.window_start) || shown(doc);
}

function windowCaption(w) {
  if (!w.window_start) return "no window yet";
  const state = w.closed ? "closed" : w.current ? "filling: counts still arriving" : "open";
  return `event time ${utc(w.window_start, true)} – ${utc(w.window_end)} (${state})`;
}

function tile(name, kpi, value, band, text, unit = "") {
  const el = element("div", { class: "tile" + (band ? " band-" + band : ""), "data-kpi": kpi,
                              "data-value": value === null || value === undefined ? "" : value });
  el.append(element("div", { class: "name" }, name),
            element("div", { class: "value" }, text, unit ? element("small", {}, " " + unit) : ""),
            element("div", { class: "band" }, band || "\u00a0"));
  return el;
}

function drawTiles(rates, purchases) {
  const offers = rowOf(shown(rates), ALL, ALL) || {};
  const bought = alongside(purchases, shown(rates));
  const all = rowOf(bought, ALL, ALL) || {};
  const members = rowOf(bought, "member", ALL) || {};
  $("tiles-window").textContent = windowCaption(shown(rates));
  $("tiles").replaceChildren(
    tile("Offer conversion rate", "rate", offers.rate, offers.band, pct(offers.rate)),
    tile("Customers upsold", "customer_rate", offers.customer_rate, null, pct(offers.customer_rate)),
    tile("Transaction upsell rate", "transaction_rate", all.transaction_rate, all.band,
         pct(all.transaction_rate)),
    tile("Loyalty-member upsell rate", "loyalty_rate", members.transaction_rate, members.band,
         pct(members.transaction_rate)),
    tile("Upsell revenue share", "revenue_share", all.revenue_share, null, pct(all.revenue_share)),
    tile("AOV uplift (upsell vs other orders)", "aov_uplift", all.aov_uplift, null,
         money(all.aov_uplift), MONEY_UNIT + " per order"),
    tile("Buyers who upgrade", "buyer_rate", all.buyer_rate, null, pct(all.buyer_rate)),
  );
}

function drawGrid(rates) {
  const w = shown(rates);
  $("grid-window").textContent = windowCaption(w);
  const rows = w.rows;
  const channels = [...new Set(rows.map((r) => r.channel))].sort();
  const segments = [...new Set(rows.map((r) => r.segment))].sort();
  const table = element("table", { "data-window-start": w.window_start || "",
                                   "data-filling": w.closed ? "false" : "true" });
  table.append(headRow("channel \\ segment", ...segments));
  const body = document.createElement("tbody");
  for (const channel of channels) {
    const tr = element("tr", {}, element("th", {}, channel));
    for (const segment of segments) {
      const row = rows.find((r) => r.channel === channel && r.segment === segment);
      const td = document.createElement("td");
      if (row) {
        // A filling window's rate is not yet a verdict: no band colour.
        td.className = "rate" + (row.band && w.closed ? " band-" + row.band : " filling");
        td.dataset.channel = channel;
        td.dataset.segment = segment;
        td.dataset.rate = row.rate === null ? "" : String(row.rate);
        td.title = `${row.conversions} / ${row.offers} offers`;
        td.textContent = pct(row.rate);
      }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  table.appendChild(body);
  $("grid").replaceChildren(table);
}

// uPlot plugin: the benchmark bands shaded behind the lines and the filling window greyed.
function backdrop(target) {
  return {
    hooks: {
      drawAxes: [(u) => {
        const state = charts.get(target);
        if (!state) return;
        const { ctx, bbox } = u;
        ctx.save();
        const bounds = Object.entries(state.bands).sort((a, b) => a[1] - b[1]);
        bounds.forEach(([name, lower], i) => {
          const upper = i + 1 < bounds.length ? bounds[i + 1][1] : Infinity;
          const top = u.valToPos(Math.min(upper, u.scales.y.max), "y", true);
          const bottom = u.valToPos(Math.max(lower, u.scales.y.min), "y", true);
          if (bottom <= top) return;
          ctx.fillStyle = BAND_FILL[name] || "rgba(0,0,0,0.04)";
          ctx.fillRect(bbox.left, top, bbox.width, bottom - top);
          ctx.fillStyle = "#627d98";
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.textAlign = "right";
          ctx.fillText(name, bbox.left + bbox.width - 4 * devicePixelRatio,
                       bottom - 4 * devicePixelRatio);
        });
        if (state.filling !== null) {
          const left = Math.max(bbox.left, u.valToPos(state.filling[0], "x", true));
          const right = Math.min(bbox.left + bbox.width, u.valToPos(state.filling[1], "x", true));
          if (right > left) {
            ctx.fillStyle = "rgba(130,130,130,0.18)";
            ctx.fillRect(left, bbox.top, right - left, bbox.height);
            ctx.fillStyle = "#52606d";
            ctx.textAlign = "left";
            ctx.fillText("filling", left + 3 * devicePixelRatio, bbox.top + 12 * devicePixelRatio);
          }
        }
        ctx.restore();
      }],
    },
  };
}

function chartOptions(target, names, width) {
  return {
    width, height: 230,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    // x reaches the end of the filling window, so that its shading shows.
    scales: { x: { time: true, range: (u, min, max) => {
                const filling = charts.get(target)?.filling;
                return [min, Math.max(max, filling ? filling[1] : max)];
              } },
              y: { range: (u, min, max) => [0, Math.max(0.05, max * 1.1)] } },
    axes: [
      { label: "event time (UTC, window start)", labelSize: 18,
        // Whole minutes at least, so that HH:MM names each tick once (a date past a day).
        incrs: [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
                604800],
        values: (u, splits) => {
          const daily = splits.length > 1 && splits[1] - splits[0] >= 86400;
          const labels = splits.map((s) => new Date(s * 1e3).toISOString()
            .slice(daily ? 5 : 11, daily ? 10 : 16));
          $(target).dataset.xTicks = JSON.stringify(labels);
          return labels;
        } },
      { values: (u, splits) => splits.map((v) => (100 * v).toFixed(0) + " %"), size: 50 },
    ],
    series: [
      { label: "window (event time)", value: (u, ts) => (ts === null ? "–"
        : new Date(ts * 1e3).toISOString().slice(0, 16).replace("T", " ") + " UTC") },
      ...names.map((name, n) => ({ label: name, stroke: COLORS[n % COLORS.length], width: 2,
                                   spanGaps: false, value: (u, v) => pct(v),
                                   points: { show: true, size: 5 } })),
    ],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    plugins: [backdrop(target)],
  };
}

function drawChart(target, doc, pick, rateName, scale) {
  // One line per series over the recent windows, oldest left; x is the window's start.
  const windows = [...doc.windows].reverse();
  const xs = windows.map((w) => Date.parse(w.window_start) / 1000);
  const names = [...new Set(windows.flatMap((w) => w.rows.map(pick)).filter((n) => n !== null))]
    .sort();
  const ys = names.map((name) => windows.map((w) => {
    const row = w.rows.find((r) => pick(r) === name);
    return row === undefined || row[rateName] === null ? null : row[rateName];
  }));
  const current = windows.find((w) => w.current && !w.closed);
  const container = $(target);
  let state = charts.get(target);
  const key = JSON.stringify(names);
  if (state && state.key !== key) {
    state.plot.destroy();
    state = undefined;
  }
  if (!state) {
    container.replaceChildren();
    state = { key, plot: null };
    charts.set(target, state);
  }
  // Read by the drawing hooks and the x range, so set before drawing.
  state.bands = doc.bands[scale] || {};
  state.filling = current ? [Date.parse(current.window_start) / 1000,
                             Date.parse(current.window_end) / 1000] : null;
  container.dataset.series = String(names.length);
  container.dataset.bands = JSON.stringify(state.bands);
  container.dataset.filling = current ? current.window_start : "";
  if (state.plot === null) {
    state.plot = new uPlot(chartOptions(target, names, Math.max(300, container.clientWidth)),
                           [xs, ...ys], container);
  } else {
    state.plot.setData([xs, ...ys]);
  }
}

function drawPurchases(doc, rates) {
  const w = alongside(doc, shown(rates));
  $("purchases-window").textContent = windowCaption(w);
  const rows = w.rows.filter((r) => r.loyalty === ALL || r.product_line === ALL);
  const table = document.createElement("table");
  table.append(headRow("loyalty", "product line", "purchases", "upsell", "transaction rate",
                       "revenue share", `AOV uplift (${MONEY_UNIT} per order)`, "buyer rate"));
  const body = document.createElement("tbody");
  for (const r of rows) {
    body.append(element("tr", { "data-loyalty": r.loyalty, "data-product-line": r.product_line },
      element("td", {}, r.loyalty), element("td", {}, r.product_line),
      element("td", {}, r.purchases), element("td", {}, r.upsell_purchases),
      element("td", { class: "rate" + (r.band && w.closed ? " band-" + r.band : " filling") },
              pct(r.transaction_rate)),
      element("td", {}, pct(r.revenue_share)), element("td", {}, money(r.aov_uplift)),
      element("td", {}, pct(r.buyer_rate))));
  }
  table.appendChild(body);
  $("purchases").replaceChildren(table);
}

function drawAlerts(alerts) {
  const list = $("alerts");
  if (!alerts.length) {
    list.replaceChildren(element("li", { class: "none" }, "No rate drop detected."));
    return;
  }
  list.replaceChildren(...alerts.map((a) => element("li",
    { class: "alert", "data-window": a.window, "data-channel": a.channel,
      "data-segment": a.segment, title: a.reason || "" },
    element("b", {}, `${a.channel} / ${a.segment}`),
    ` (${a.window} window${a.window_start ? " from event time " + utc(a.window_start, true) : ""}): ` +
    `${pct(a.observed_rate)} vs baseline ${pct(a.baseline_rate)}`)));
}

// What the worker is watching: said plainly when the demo describes it.
function drawSource(doc) {
  const box = $("source");
  const source = doc.source;
  if (!source) {
    box.replaceChildren(element("p", {}, "Live data from the configured Kafka topics."));
    box.dataset.kind = "live";
    return;
  }
  box.dataset.kind = source.kind;
  const parts = [element("p", {},
    element("b", {}, "Simulated data"), " from the demo's simulator, not real customers. ",
    `Event time runs about ${Math.round(source.speed)} × the wall clock: it started at ` +
    `${utc(source.event_start, true)} when the wall clock read ${utc(source.started_at, true, true)}.`)];
  const drop = source.drop;
  if (drop) {
    const streamMs = doc.stream_time ? Date.parse(doc.stream_time) : null;
    const from = Date.parse(drop.from), until = Date.parse(drop.until);
    const phase = streamMs === null || streamMs < from ? "not yet (before the drop)"
      : streamMs < until ? "now (the drop is on)" : "over (the rate has recovered)";
    const wallFrom = new Date(Date.parse(source.started_at) + drop.from_wall_s * 1000);
    const wallUntil = new Date(Date.parse(source.started_at) + drop.until_wall_s * 1000);
    const changes = drop.segments.map((s) => `${s.segment} ${pct(s.from_rate)} → ${pct(s.to_rate)}`)
      .join(", ");
    parts.push(element("p", { id: "source-drop", "data-channel": drop.channel,
                              "data-phase": phase.split(" ")[0] },
      element("b", {}, "Injected drop: "),
      `channel ${drop.channel}, every segment's true conversion rate × ${drop.factor} ` +
      `(${changes}), from event time ${utc(drop.from, true)} to ${utc(drop.until)}; that is ` +
      `${clockOf(drop.from_wall_s)} to ${clockOf(drop.until_wall_s)} after the start ` +
      `(wall clock ${utc(wallFrom.toISOString(), false, true)} to ` +
      `${utc(wallUntil.toISOString(), false, true)}). Drop: ${phase}. ` +
      "An alert fires once a window is measured low against the windows before it, and " +
      "resolves once one is normal again."));
  }
  box.replaceChildren(...parts);
}

function drawHealth(health) {
  const items = [["events/s", health.events_per_second === null ? "–" :
                  Math.round(health.events_per_second)],
                 ["events read", health.events_in], ["rejected", health.rejected],
                 ["late", health.late], ["duplicates", health.duplicates], ["lag", health.lag]];
  $("health").replaceChildren(...items.flatMap(([k, v]) =>
    [element("dt", {}, k), element("dd", { "data-health": k }, v)]));
}

function drawControls(doc) {
  const select = $("window");
  if (!select.options.length) {
    for (const label of doc.windows_available) select.add(new Option(label, label));
    select.value = doc.window;
    select.onchange = () => { windowLabel = select.value; resetCharts(); refresh(); };
    const show = $("show");
    show.value = which;
    show.onchange = () => { which = show.value; refresh(); };
  }
  $("event-clock").textContent = doc.stream_time ? utc(doc.stream_time, true, true) : "–";
  $("wall-clock").textContent = utc(new Date().toISOString(), false, true);
  $("error").textContent = "";
  $("bands").textContent = Object.entries(doc.bands).map(([scale, bounds]) =>
    `${scale}: ` + Object.entries(bounds).map(([b, v]) => `${b} ≥ ${pct(v)}`).join(", "))
    .join(" · ");
}

function resetCharts() {
  for (const state of charts.values()) state.plot.destroy();
  charts.clear();
}

async function refresh() {
  try {
    const [rates, campaign, purchases] = await Promise.all(
      [view("channel_segment"), view("campaign"), view("purchases")]);
    drawControls(rates);
    drawSource(rates);
    drawTiles(rates, purchases);
    drawGrid(rates);
    drawChart("chart-channel", rates, (r) => (r.segment === ALL ? r.channel : null), "rate",
              "campaign");
    drawChart("chart-campaign", campaign,
              (r) => (r.product_line === ALL ? r.campaign_type : null), "rate", "campaign");
    drawChart("chart-product", campaign,
              (r) => (r.campaign_type === ALL ? r.product_line : null), "rate", "campaign");
    drawPurchases(purchases, rates);
    drawAlerts(rates.alerts);
    drawHealth(rates.health);
    document.body.dataset.ready = "true";
  } catch (error) {
    $("error").textContent = String(error);
  }
}

refresh();
setInterval(refresh, 2000);
