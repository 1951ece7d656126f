"use strict";
// The live page: reads /api/rates every 2 s and draws tiles, a grid, charts and tables.
// No build step and no library: charts are inline SVG.
// Every value is set as text or as an attribute through the DOM, never parsed as markup:
// channel, segment, campaign_type, product_line and the alerts' fields come from producers.

const ALL = "__all__";
const COLORS = ["#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#56ccf2", "#6fcf97",
                "#bb6bd9", "#f2c94c", "#828282"];
const $ = (id) => document.getElementById(id);
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
const money = (v) => (v === null || v === undefined ? "–" : v.toFixed(2));
const SVG = "http://www.w3.org/2000/svg";
let windowLabel = new URLSearchParams(location.search).get("window");

// An element with attributes (set as values, never parsed) and children (nodes or text).
function element(tag, attributes = {}, ...children) {
  return build(document.createElement(tag), attributes, children);
}

function svgElement(tag, attributes = {}, ...children) {
  return build(document.createElementNS(SVG, tag), attributes, children);
}

function build(node, attributes, children) {
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
  const query = new URLSearchParams({ view: name });
  if (windowLabel) query.set("window", windowLabel);
  const response = await fetch("/api/rates?" + query);
  if (!response.ok) throw new Error((await response.json()).error);
  return response.json();
}

function rowOf(windowDoc, first, second) {
  const dims = Object.keys(windowDoc.rows[0] || {}).slice(0, 2);
  return (windowDoc.rows || []).find((r) => r[dims[0]] === first && r[dims[1]] === second);
}

function current(doc) {
  return doc.windows.find((w) => w.current) || doc.windows[0] || { rows: [] };
}

function tile(name, kpi, value, band, text) {
  const el = document.createElement("div");
  el.className = "tile" + (band ? " band-" + band : "");
  el.dataset.kpi = kpi;
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.append(element("div", { class: "name" }, name), element("div", { class: "value" }, text),
            element("div", { class: "band" }, band || "\u00a0"));
  return el;
}

function drawTiles(rates, purchases) {
  const offers = rowOf(current(rates), ALL, ALL) || {};
  const all = rowOf(current(purchases), ALL, ALL) || {};
  const members = rowOf(current(purchases), "member", ALL) || {};
  const tiles = $("tiles");
  tiles.replaceChildren(
    tile("Offer conversion rate", "rate", offers.rate, offers.band, pct(offers.rate)),
    tile("Customers upsold", "customer_rate", offers.customer_rate, null, pct(offers.customer_rate)),
    tile("Transaction upsell rate", "transaction_rate", all.transaction_rate, all.band,
         pct(all.transaction_rate)),
    tile("Loyalty-member upsell rate", "loyalty_rate", members.transaction_rate, members.band,
         pct(members.transaction_rate)),
    tile("Upsell revenue share", "revenue_share", all.revenue_share, null, pct(all.revenue_share)),
    tile("AOV uplift", "aov_uplift", all.aov_uplift, null, money(all.aov_uplift)),
    tile("Buyers who upgrade", "buyer_rate", all.buyer_rate, null, pct(all.buyer_rate)),
  );
}

function drawGrid(rates) {
  const rows = current(rates).rows;
  const channels = [...new Set(rows.map((r) => r.channel))].sort();
  const segments = [...new Set(rows.map((r) => r.segment))].sort();
  const table = document.createElement("table");
  table.append(headRow("channel \\ segment", ...segments));
  const body = document.createElement("tbody");
  for (const channel of channels) {
    const tr = document.createElement("tr");
    tr.append(element("th", {}, channel));
    for (const segment of segments) {
      const row = rows.find((r) => r.channel === channel && r.segment === segment);
      const td = document.createElement("td");
      if (row) {
        td.className = "rate" + (row.band ? " band-" + row.band : "");
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

function drawChart(target, doc, pick, rateName) {
  // One line per series over the recent windows, oldest left.
  const windows = [...doc.windows].reverse();
  const series = new Map();
  windows.forEach((w, i) => {
    for (const row of w.rows) {
      const name = pick(row);
      if (name === null || row[rateName] === null) continue;
      if (!series.has(name)) series.set(name, []);
      series.get(name).push([i, row[rateName]]);
    }
  });
  const width = 600, height = 200, pad = 30;
  const top = Math.max(0.05, ...[...series.values()].flat().map((p) => p[1]));
  const x = (i) => (windows.length > 1 ? pad + (i * (width - 2 * pad)) / (windows.length - 1)
                                       : width / 2);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                                  "data-series": series.size });
  for (const t of [0, top / 2, top]) {
    svg.append(
      svgElement("line", { x1: pad, x2: width - pad, y1: y(t), y2: y(t), stroke: "#d9e2ec" }),
      svgElement("text", { x: 2, y: y(t) + 4, "font-size": 10, fill: "#627d98" }, pct(t)));
  }
  const legend = element("div", { class: "legend" });
  [...series.keys()].sort().forEach((name, n) => {
    const color = COLORS[n % COLORS.length];
    const points = series.get(name).map(([i, v]) => `${x(i)},${y(v)}`).join(" ");
    svg.append(svgElement("polyline", { fill: "none", stroke: color, "stroke-width": 2, points,
                                        "data-name": name },
                          svgElement("title", {}, name)));
    series.get(name).forEach(([i, v]) => {
      svg.append(svgElement("circle", { cx: x(i), cy: y(v), r: 2.5, fill: color },
                            svgElement("title", {}, `${name}: ${pct(v)}`)));
    });
    const swatch = element("i");
    swatch.style.background = color;  // CSSOM, which the Content-Security-Policy allows
    legend.append(element("span", { "data-name": name }, swatch, name));
  });
  $(target).replaceChildren(svg, legend);
}

function drawPurchases(doc) {
  const rows = current(doc).rows.filter((r) => r.loyalty === ALL || r.product_line === ALL);
  const table = document.createElement("table");
  table.append(headRow("loyalty", "product line", "purchases", "upsell", "transaction rate",
                       "revenue share", "AOV uplift", "buyer rate"));
  const body = document.createElement("tbody");
  for (const r of rows) {
    body.append(element("tr", { "data-loyalty": r.loyalty, "data-product-line": r.product_line },
      element("td", {}, r.loyalty), element("td", {}, r.product_line),
      element("td", {}, r.purchases), element("td", {}, r.upsell_purchases),
      element("td", { class: "rate" + (r.band ? " band-" + r.band : "") },
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
    ` (${a.window}${a.window_start ? ", window of " + a.window_start : ""}): ` +
    `${pct(a.observed_rate)} vs baseline ${pct(a.baseline_rate)}`)));
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
    select.onchange = () => { windowLabel = select.value; refresh(); };
  }
  $("clock").textContent = `stream time ${doc.stream_time || "–"} · updated ` +
    new Date().toLocaleTimeString();
  $("bands").textContent = Object.entries(doc.bands).map(([scale, bounds]) =>
    `${scale}: ` + Object.entries(bounds).map(([b, v]) => `${b} ≥ ${pct(v)}`).join(", "))
    .join(" · ");
}

async function refresh() {
  try {
    const [rates, campaign, purchases] = await Promise.all(
      [view("channel_segment"), view("campaign"), view("purchases")]);
    drawControls(rates);
    drawTiles(rates, purchases);
    drawGrid(rates);
    drawChart("chart-channel", rates, (r) => (r.segment === ALL ? r.channel : null), "rate");
    drawChart("chart-campaign", campaign,
              (r) => (r.product_line === ALL ? r.campaign_type : null), "rate");
    drawChart("chart-product", campaign,
              (r) => (r.campaign_type === ALL ? r.product_line : null), "rate");
    drawPurchases(purchases);
    drawAlerts(rates.alerts);
    drawHealth(rates.health);
    document.body.dataset.ready = "true";
  } catch (error) {
    $("clock").textContent = String(error);
  }
}

refresh();
setInterval(refresh, 2000);
