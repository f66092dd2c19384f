// bikesense map page: MapLibre GL JS (from npm, served locally), heat-map tiles of the API,
// metric picker, period slider, legend, live updates over SSE, and a time series per cell.
import * as maplibregl from "/static/maplibre/maplibre-gl.mjs";

const EARTH_CIRCUMFERENCE_M = 40075016.686;
const HOUR_MS = 3600 * 1000;

const state = {
  meta: null,
  metric: "pm25",
  rangeHours: 24,
  endOffsetHours: 0,
  version: 0, // bumped by live updates so the tiles are fetched again
  key: sessionStorage.getItem("bikesense-key") || "",
};
// For tests and curious officers: what the page is doing.
window.bikesense = { state, map: null, tileLoads: 0, tileErrors: 0, liveEvents: 0, ready: false };

const $ = (id) => document.getElementById(id);

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

async function getJSON(url) {
  const response = await fetch(url, { headers: headers() });
  const body = await response.json();
  if (!response.ok) {
    const detail = (body.detail || []).map((d) => `${d.parameter ?? ""}: ${d.message}`).join("; ");
    throw new Error(`${response.status} ${detail}`);
  }
  return body;
}

function period() {
  // Whole hours, so tile URLs stay the same within the hour and caches can work.
  const nowHour = Math.ceil(Date.now() / HOUR_MS) * HOUR_MS;
  const end = new Date(nowHour + state.endOffsetHours * HOUR_MS);
  const start = new Date(end.getTime() - state.rangeHours * HOUR_MS);
  return { from: start.toISOString(), to: end.toISOString() };
}

function tileUrl() {
  const { from, to } = period();
  const q = new URLSearchParams({ from, to, v: String(state.version) });
  return `${location.origin}/v1/tiles/${state.metric}/{z}/{x}/{y}.png?${q}`;
}

function baseStyle() {
  // Offline first: a plain background always works; the raster base map is added when reachable.
  return {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#e9edf0" } }],
  };
}

function probeBasemap(template) {
  return new Promise((resolve) => {
    if (!template) return resolve(false);
    const img = new Image();
    const timer = setTimeout(() => { img.src = ""; resolve(false); }, 3000);
    img.onload = () => { clearTimeout(timer); resolve(true); };
    img.onerror = () => { clearTimeout(timer); resolve(false); };
    img.crossOrigin = "anonymous";
    img.src = template.replace("{z}", "0").replace("{x}", "0").replace("{y}", "0");
  });
}

function setHeatSource(map) {
  const source = map.getSource("heat");
  if (source) {
    source.setTiles([tileUrl()]);
    return;
  }
  map.addSource("heat", { type: "raster", tiles: [tileUrl()], tileSize: 256, maxzoom: 22 });
  map.addLayer({ id: "heat", type: "raster", source: "heat", paint: { "raster-opacity": 1.0, "raster-fade-duration": 0 } });
}

function renderLegend() {
  const meta = state.meta;
  const scale = meta.scales.find((s) => s.metric === state.metric);
  const box = $("legend");
  box.replaceChildren();
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = `${scale.name} (${scale.unit})`;
  box.append(title);
  for (const band of scale.bands) {
    const row = document.createElement("div");
    row.className = "row";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = band.colour;
    const label = document.createElement("span");
    // Labels like "45-50" already say their range; word labels ("Fair") get it added.
    const range = band.upper === null ? `≥ ${band.lower}` : `${band.lower}–${band.upper}`;
    label.textContent = /\d/.test(band.label) ? band.label : `${band.label} (${range})`;
    row.append(sw, label);
    box.append(row);
  }
  const none = document.createElement("div");
  none.className = "row";
  none.innerHTML = '<span class="swatch none"></span><span>no data, too little data, or fewer than ' +
    `${meta.public_min_rides} rides (not public): not shown</span>`;
  box.append(none);
  const who = meta.who_2021 && meta.who_2021.annual && meta.who_2021.annual[state.metric];
  if (who !== undefined) {
    const p = document.createElement("div");
    p.className = "who";
    p.textContent = `WHO 2021 guideline: ${who} µg/m³ annual, ${meta.who_2021["24h"][state.metric]} µg/m³ 24-hour`;
    box.append(p);
  }
  if (scale.source) {
    const src = document.createElement("div");
    src.className = "source";
    src.textContent = `Source: ${scale.source}`;
    box.append(src);
  }
}

function resolutionForZoom(zoom, lat) {
  const mPerPx = EARTH_CIRCUMFERENCE_M * Math.cos((lat * Math.PI) / 180) / 256 / 2 ** Math.floor(zoom);
  const resolutions = [...state.meta.resolutions].sort((a, b) => b - a);
  for (const r of resolutions) {
    if (state.meta.edge_m[r] / mPerPx >= state.meta.min_edge_px) return r;
  }
  return resolutions[resolutions.length - 1];
}

function bucketFor(hours) {
  if (hours <= 24) return "1h";
  if (hours <= 168) return "3h";
  return "1d";
}

function drawChart(body) {
  const el = $("chart");
  el.replaceChildren();
  // Noise is shown on energy (LAeq), like the map; everything else by its mean.
  const value = (p) => (body.metric === "noise" ? p.laeq_db : p.mean);
  const pts = body.points.filter((p) => value(p) !== null);
  if (!pts.length) {
    el.textContent = "No public data for this cell in the period.";
    return;
  }
  const W = 400, H = 180, L = 36, B = 20, T = 8, R = 8;
  const t0 = new Date(body.time_from).getTime(), t1 = new Date(body.time_to).getTime();
  const lo = Math.min(...pts.map((p) => p.ci95_low ?? value(p)), 0);
  const hi = Math.max(...pts.map((p) => p.ci95_high ?? value(p)), ...pts.map(value)) * 1.1 || 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - ((v - lo) / (hi - lo)) * (H - B - T);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    svg.append(n);
    return n;
  };
  const ci = body.metric === "noise" ? [] : pts.filter((p) => p.ci95_low !== null);
  if (ci.length > 1) {
    const upper = ci.map((p) => `${x(new Date(p.start).getTime())},${y(p.ci95_high)}`);
    const lower = ci.map((p) => `${x(new Date(p.start).getTime())},${y(p.ci95_low)}`).reverse();
    add("polygon", { class: "ci", points: [...upper, ...lower].join(" ") });
  }
  add("polyline", { class: "mean", points: pts.map((p) => `${x(new Date(p.start).getTime())},${y(value(p))}`).join(" ") });
  for (const p of pts) {
    add("circle", {
      cx: x(new Date(p.start).getTime()), cy: y(value(p)), r: 2.5,
      fill: p.status === "ok" ? "#1d2630" : "#fff", stroke: "#1d2630",
    });
  }
  add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  add("text", { x: 2, y: T + 8 }, hi.toFixed(0));
  add("text", { x: 2, y: H - B }, lo.toFixed(0));
  add("text", { x: L, y: H - 4 }, new Date(t0).toISOString().slice(0, 16).replace("T", " "));
  add("text", { x: W - R - 90, y: H - 4 }, new Date(t1).toISOString().slice(0, 16).replace("T", " "));
  el.append(svg);
}

async function showCell(lngLat, map) {
  const res = resolutionForZoom(map.getZoom(), lngLat.lat);
  const { from, to } = period();
  const q = new URLSearchParams({
    metric: state.metric, lat: lngLat.lat.toFixed(6), lon: lngLat.lng.toFixed(6),
    resolution: String(res), bucket: bucketFor(state.rangeHours), from, to,
  });
  $("chart-panel").hidden = false;
  $("chart-title").textContent = "Loading…";
  try {
    const body = await getJSON(`/v1/timeseries?${q}`);
    $("chart-title").textContent = `${state.metric} (${body.unit}) in cell ${body.cell}, per ${bucketFor(state.rangeHours)}`;
    $("chart-note").textContent = state.metric === "noise"
      ? "Line: LAeq (energy average); hollow: too few readings."
      : "Line: mean; band: 95 % interval (rides as the unit); hollow: too few readings.";
    drawChart(body);
    window.bikesense.lastSeries = body;
  } catch (err) {
    $("chart-title").textContent = "Could not load this cell";
    $("chart").textContent = String(err.message || err);
  }
}

function updateEndLabel() {
  const { from, to } = period();
  $("end-label").textContent = state.endOffsetHours === 0 ? "now" :
    `${to.slice(0, 13).replace("T", " ")}h UTC`;
  $("end").title = `${from} → ${to}`;
}

function connectLive(map) {
  // EventSource cannot send headers; the public stream is enough to know when to refresh.
  const source = new EventSource("/v1/live");
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      if (state.endOffsetHours === 0) {
        state.version += 1;
        setHeatSource(map);
      }
    }, 2000);
  };
  source.addEventListener("open", () => {
    $("live-dot").className = "dot on";
    $("live-text").textContent = "live updates: on";
  });
  source.addEventListener("error", () => {
    $("live-dot").className = "dot off";
    $("live-text").textContent = "live updates: reconnecting";
  });
  for (const kind of ["aggregates", "resync"]) {
    source.addEventListener(kind, (ev) => {
      window.bikesense.liveEvents += 1;
      const data = JSON.parse(ev.data || "{}");
      if (kind === "resync" || !data.metrics || data.metrics.includes(state.metric)) refresh();
    });
  }
}

async function main() {
  state.meta = await getJSON("/v1/meta");
  $("note").textContent = state.meta.note;
  const select = $("metric");
  for (const m of state.meta.metrics) {
    const option = document.createElement("option");
    option.value = m;
    option.textContent = { pm1: "PM1", pm25: "PM2.5", pm10: "PM10", no2: "NO₂", noise: "Noise", temperature: "Temperature", humidity: "Humidity" }[m] || m;
    select.append(option);
  }
  select.value = state.metric;
  if (state.key) $("role").textContent = `role: ${state.meta.role}`;

  const map = new maplibregl.Map({
    container: "map",
    style: baseStyle(),
    center: state.meta.map_center,
    zoom: state.meta.map_zoom,
    maxZoom: 19,
    attributionControl: { compact: true },
    transformRequest: (url) => (url.startsWith(location.origin) && state.key ? { url, headers: headers() } : { url }),
  });
  window.bikesense.map = map;
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl(), "bottom-left");

  map.on("load", async () => {
    setHeatSource(map);
    if (await probeBasemap(state.meta.basemap_url)) {
      map.addSource("osm", {
        type: "raster", tiles: [state.meta.basemap_url], tileSize: 256, maxzoom: 19,
        attribution: "© OpenStreetMap contributors",
      });
      map.addLayer({ id: "osm", type: "raster", source: "osm" }, "heat");
    }
    window.bikesense.ready = true;
  });
  map.on("sourcedata", (e) => {
    if (e.sourceId === "heat" && e.tile) window.bikesense.tileLoads += 1;
  });
  map.on("error", (e) => {
    if (e.sourceId === "heat") window.bikesense.tileErrors += 1;
  });
  map.on("click", (e) => showCell(e.lngLat, map));

  select.addEventListener("change", () => {
    state.metric = select.value;
    renderLegend();
    setHeatSource(map);
  });
  $("range").addEventListener("change", () => {
    state.rangeHours = Number($("range").value);
    updateEndLabel();
    setHeatSource(map);
  });
  $("end").addEventListener("input", updateEndLabel);
  $("end").addEventListener("change", () => {
    state.endOffsetHours = Number($("end").value);
    updateEndLabel();
    setHeatSource(map);
  });
  $("chart-close").addEventListener("click", () => { $("chart-panel").hidden = true; });
  $("key-apply").addEventListener("click", async () => {
    state.key = $("key").value.trim();
    sessionStorage.setItem("bikesense-key", state.key);
    try {
      state.meta = await getJSON("/v1/meta");
      $("role").textContent = `role: ${state.meta.role}`;
      setHeatSource(map);
    } catch (err) {
      $("role").textContent = String(err.message || err);
    }
  });

  renderLegend();
  updateEndLabel();
  connectLive(map);
}

main().catch((err) => {
  const p = document.createElement("p");
  p.className = "note";
  p.style.cssText = "position:absolute;bottom:0;left:12px";
  p.textContent = `Map failed to start: ${String(err)}`;
  document.body.append(p);
  window.bikesense.error = String(err);
});
