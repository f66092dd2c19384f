// bikesense map page: MapLibre GL JS with the API's heat-map tiles over an offline base map,
// metric and period pickers (local time), legend, honest states (no data, server or database
// away, refused key, live updates), and a chart per cell. Every package comes from npm and is
// served by the API (api/webassets.py): nothing is fetched from a CDN.
import * as maplibregl from "/static/maplibre/maplibre-gl.mjs";
import { DateTime } from "/static/luxon/luxon.mjs";
import uPlot from "/static/uplot/uPlot.esm.js";
import { chooseLanguage, language, maybe, setLanguage, t } from "/static/page/i18n.js";

const EARTH_CIRCUMFERENCE_M = 40075016.686;
const MINUTE_MS = 60 * 1000;
const HOUR_MS = 60 * MINUTE_MS;
const HEALTH_EVERY_MS = 15 * 1000;
const RETRY_START_MS = 5 * 1000;
// Live events can come every second while a fleet uploads; redraw the tiles at most this often.
const LIVE_REFRESH_MS = 5 * 1000;
const LABELS = { pm1: "PM1", pm25: "PM2.5", pm10: "PM10", no2: "NO₂", noise: "Noise",
  temperature: "Temperature", humidity: "Humidity" };

function metricLabel(m) {
  return maybe(`metric_${m}`) || LABELS[m] || m;
}

const params = new URLSearchParams(location.hash.slice(1));
const state = {
  meta: null,
  metric: params.get("metric") || "pm25",
  // {kind: "last", hours} | {kind: "day", day: "YYYY-MM-DD"} | {kind: "custom", from, to}
  // (local wall-clock strings, "YYYY-MM-DDTHH:mm", in state.tz)
  period: { kind: "last", hours: 24 },
  tz: params.get("tz") || "Europe/Amsterdam",
  version: 0, // bumped by live updates so the tiles are fetched again
  key: sessionStorage.getItem("bikesense-key") || "",
  scale: params.get("scale") === "continuous" ? "continuous" : "bands",
  diff: params.get("diff") === "1",
  compare: { kind: params.get("compare") || "none", day: params.get("compare-day") || "" },
  selected: null, // {lngLat} of the clicked cell
  health: "unknown", // ok | degraded | down
  live: "connecting", // connecting | open | reconnecting
  lastLiveMs: null,
  streets: null, // the offline base map's features, for "near …" in the cell panel
};
// For tests and curious officers: what the page is doing.
window.bikesense = {
  state, map: null, tileLoads: 0, tileErrors: 0, liveEvents: 0, ready: false, started: false,
  problem: null, cellsInView: null, basemap: "none", selectedCell: null, plot: null,
};

const $ = (id) => document.getElementById(id);
let map = null;
let plot = null;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

async function request(url) {
  let response;
  try {
    response = await fetch(url, { headers: headers(), cache: "no-store" });
  } catch (err) {
    throw new HttpError(0, "the server cannot be reached");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const detail = (body.detail || []).map((d) => d.message).join("; ") || response.statusText;
    throw new HttpError(response.status, detail);
  }
  return response;
}

async function getJSON(url) {
  return (await request(url)).json();
}

// ---------------------------------------------------------------- problems and messages

// What is wrong, most serious first; the banner shows the first one present.
const PROBLEM_ORDER = ["key", "server", "database", "tiles", "empty"];
const problems = new Map();

// A problem is a message key and its values, so that it can be said again in another language.
function setProblem(kind, key, vars = {}) {
  if (key) problems.set(kind, { key, vars }); else problems.delete(kind);
  renderBanner();
}

function renderBanner() {
  const kind = PROBLEM_ORDER.find((k) => problems.has(k)) || null;
  window.bikesense.problem = kind;
  const banner = $("banner");
  banner.hidden = !kind;
  banner.className = kind === "empty" ? "info" : "error";
  banner.dataset.kind = kind || "";
  $("banner-text").textContent = kind ? t(problems.get(kind).key, problems.get(kind).vars) : "";
  const actions = $("banner-actions");
  actions.replaceChildren();
  if (kind === "key") {
    actions.append(button(t("enterAnotherKey"), () => openKeyBox()),
      button(t("continueWithoutKey"), () => useKey("")));
  }
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function openKeyBox() {
  setPanelOpen(true);
  $("key-box").open = true;
  $("key").focus();
}

// A failed request: say what failed, and never leave it looking like "no data".
function reportFailure(err) {
  const status = err instanceof HttpError ? err.status : -1;
  if (status === 401 || status === 403) {
    setProblem("key", "keyRefused", { detail: err.message });
    $("fleet-open").hidden = true;
    $("export-box").hidden = true;
    $("key-box").open = true;
  } else if (status === 0) {
    setProblem("server", "serverAway");
  } else if (status === 503) {
    setProblem("database", "databaseAway");
  } else {
    setProblem("server", "serverAnswered", { status, detail: err.message || err });
  }
}

// ---------------------------------------------------------------- time

function localFromMs(ms) {
  return DateTime.fromMillis(ms, { zone: state.tz, locale: language() });
}

function parseLocal(text) {
  const dt = DateTime.fromISO(text, { zone: state.tz });
  return dt.isValid ? dt : null;
}

function period() {
  const p = state.period;
  let fromMs;
  let toMs;
  if (p.kind === "day") {
    const day = parseLocal(p.day) || localFromMs(Date.now()).startOf("day");
    fromMs = day.startOf("day").toMillis();
    toMs = day.startOf("day").plus({ days: 1 }).toMillis(); // 23 or 25 hours on DST days
  } else if (p.kind === "custom") {
    fromMs = (parseLocal(p.from) || localFromMs(Date.now() - 24 * HOUR_MS)).toMillis();
    toMs = (parseLocal(p.to) || localFromMs(Date.now())).toMillis();
  } else {
    // A rolling period ending now, to the minute: "last hour" at 00:10 is 23:10–00:10. The
    // minute keeps tile URLs the same for a minute, so caches can work.
    toMs = Math.ceil(Date.now() / MINUTE_MS) * MINUTE_MS;
    fromMs = toMs - p.hours * HOUR_MS;
  }
  return {
    fromMs, toMs, hours: (toMs - fromMs) / HOUR_MS,
    from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(),
    live: toMs >= Date.now() - MINUTE_MS,
  };
}

function periodIsValid() {
  const { fromMs, toMs } = period();
  return toMs > fromMs;
}

function renderPeriod() {
  const { fromMs, toMs } = period();
  const kind = state.period.kind;
  $("range").value = kind === "last" ? String(state.period.hours) : kind;
  $("day-box").hidden = kind !== "day";
  $("custom-box").hidden = kind !== "custom";
  const from = localFromMs(fromMs);
  const to = localFromMs(toMs);
  $("period-local").textContent = toMs > fromMs
    ? `${from.toFormat("ccc d LLL yyyy HH:mm")} – ${to.toFormat(to.hasSame(from, "day") ? "HH:mm" : "ccc d LLL HH:mm")} (${state.tz})`
    : t("periodInvalid");
  const utc = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  $("period-utc").textContent = `UTC ${utc(fromMs)} – ${utc(toMs)}`;
  const metric = metricLabel(state.metric);
  const option = $("range").selectedOptions[0];
  const span = kind !== "last" ? from.toFormat("d LLL")
    : option ? option.textContent.toLowerCase() : t("lastHours", { hours: state.period.hours });
  $("summary").textContent = `${metric} · ${span}`;
}

function setPeriod(next) {
  state.period = next;
  renderPeriod();
  writeHash();
  periodChanged();
}

// ---------------------------------------------------------------- URL state

function writeHash() {
  const q = new URLSearchParams();
  q.set("metric", state.metric);
  const p = state.period;
  if (p.kind === "last") q.set("last", String(p.hours));
  if (p.kind === "day") q.set("day", p.day);
  if (p.kind === "custom") { q.set("from", p.from); q.set("to", p.to); }
  if (map) {
    const c = map.getCenter();
    q.set("at", `${c.lat.toFixed(5)},${c.lng.toFixed(5)},${map.getZoom().toFixed(2)}`);
  }
  if (state.scale !== "bands") q.set("scale", state.scale);
  if (state.compare.kind !== "none") q.set("compare", state.compare.kind);
  if (state.compare.kind === "day") q.set("compare-day", state.compare.day);
  if (state.diff && state.compare.kind !== "none") q.set("diff", "1");
  if (params.get("tz")) q.set("tz", state.tz);
  if (params.get("values") === "raw") q.set("values", "raw");
  q.set("lang", language());
  history.replaceState(null, "", `#${q}`);
}

function readHashPeriod() {
  if (params.get("day")) return { kind: "day", day: params.get("day") };
  if (params.get("from") && params.get("to")) return { kind: "custom", from: params.get("from"), to: params.get("to") };
  const hours = Number(params.get("last"));
  return { kind: "last", hours: hours > 0 ? hours : 24 };
}

// ---------------------------------------------------------------- raw or corrected values

// Corrected values where the API has them for the metric (calibration against reference
// stations, docs/calibration.md), raw ones elsewhere; #values=raw shows raw ones always.
function valuesFor(metric = state.metric) {
  const stored = state.meta && (state.meta.corrected_metrics || []).includes(metric);
  return stored && params.get("values") !== "raw" ? "corrected" : "raw";
}

// ---------------------------------------------------------------- map layers

function tileUrl(p = period()) {
  // The same URL for the same view: a reload asks again with the tile's ETag (no-cache in
  // requestFor) and an unchanged tile costs a 304, not a new PNG.
  const q = new URLSearchParams({ from: p.from, to: p.to, values: valuesFor() });
  return `${location.origin}/v1/tiles/${state.metric}/{z}/{x}/{y}.png?${q}`;
}

// What MapLibre asks the API for: with the key, and tiles revalidated rather than taken
// from the browser's cache unasked, so that a refresh after new data shows it.
function requestFor(url) {
  if (!url.startsWith(location.origin)) return { url };
  const req = { url };
  if (state.key) req.headers = headers();
  if (url.includes("/v1/tiles/")) req.cache = "no-cache";
  return req;
}

function baseStyle() {
  // Offline first: a plain background always works; streets are added when there are any.
  return {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#eef0ea" } }],
  };
}

// The heat layer of map `m` (the main map, or the comparison's) for period `p`.
function setHeatSource(m = map, p = period()) {
  if (!m || !(p.toMs > p.fromMs)) return;
  const source = m.getSource("heat");
  if (source) {
    source.setTiles([tileUrl(p)]);
    return;
  }
  m.addSource("heat", { type: "raster", tiles: [tileUrl(p)], tileSize: 256, maxzoom: 22 });
  m.addLayer({ id: "heat", type: "raster", source: "heat", paint: { "raster-opacity": 0.85, "raster-fade-duration": 0 } },
    m.getLayer("street-labels") ? "street-labels" : undefined);
}

let basemapData; // the fetch of /v1/basemap, once for both maps

async function addOfflineBasemap(m) {
  // The operator's (or the demo's) GeoJSON of streets and places, served by the API.
  basemapData = basemapData || fetch("/v1/basemap", { cache: "no-cache" })
    .then((response) => (response.ok ? response.json() : null)).catch(() => null);
  const data = await basemapData;
  if (!data) return false;
  state.streets = data.features.filter((f) => f.geometry && f.geometry.type === "LineString");
  m.addSource("streets", { type: "geojson", data, attribution: "streets: bikesense base map" });
  const lines = ["==", ["geometry-type"], "LineString"];
  m.addLayer({ id: "street-casing", type: "line", source: "streets", filter: lines,
    layout: { "line-cap": "round", "line-join": "round" },
    paint: { "line-color": "#b9bcb4", "line-width": ["interpolate", ["linear"], ["zoom"], 12, 1.5, 17, 14] } });
  m.addLayer({ id: "streets", type: "line", source: "streets", filter: lines,
    layout: { "line-cap": "round", "line-join": "round" },
    paint: {
      "line-color": ["match", ["get", "class"], "arterial", "#fbe3a4", "#ffffff"],
      "line-width": ["interpolate", ["linear"], ["zoom"], 12, ["match", ["get", "class"], "arterial", 2, 0.8], 17, ["match", ["get", "class"], "arterial", 12, 9]],
    } });
  m.addLayer({ id: "street-labels", type: "symbol", source: "streets", filter: lines, minzoom: 14,
    layout: { "symbol-placement": "line", "text-field": ["get", "name"], "text-font": ["sans-serif"],
      "text-size": 12, "text-max-angle": 30 },
    paint: { "text-color": "#3c4650", "text-halo-color": "#ffffff", "text-halo-width": 1.5 } });
  m.addLayer({ id: "place-labels", type: "symbol", source: "streets", filter: ["==", ["geometry-type"], "Point"],
    layout: { "text-field": ["get", "name"], "text-font": ["sans-serif"], "text-size": 14 },
    paint: { "text-color": "#1d2630", "text-halo-color": "#ffffff", "text-halo-width": 2 } });
  return true;
}

let rasterReachable; // the probe of the raster base map, once for both maps

function probeRaster(template) {
  rasterReachable = rasterReachable || new Promise((resolve) => {
    if (!template) return resolve(false);
    const img = new Image();
    const timer = setTimeout(() => { img.src = ""; resolve(false); }, 3000);
    img.onload = () => { clearTimeout(timer); resolve(true); };
    img.onerror = () => { clearTimeout(timer); resolve(false); };
    img.crossOrigin = "anonymous";
    img.src = template.replace("{z}", "0").replace("{x}", "0").replace("{y}", "0");
  });
  return rasterReachable;
}

async function addBasemap(m = map) {
  let kind = "none";
  if (await addOfflineBasemap(m)) {
    kind = "offline";
  } else if (await probeRaster(state.meta.basemap_url)) {
    m.addSource("osm", {
      type: "raster", tiles: [state.meta.basemap_url], tileSize: 256, maxzoom: 19,
      attribution: "© OpenStreetMap contributors",
    });
    m.addLayer({ id: "osm", type: "raster", source: "osm" }, m.getLayer("heat") ? "heat" : undefined);
    kind = "raster";
  }
  // Streets drawn first stay under the heat map; their names over it.
  if (m.getLayer("heat") && m.getLayer("street-labels")) {
    m.moveLayer("street-casing", "heat");
    m.moveLayer("streets", "heat");
  }
  return kind;
}

// ---------------------------------------------------------------- a second period beside

// {kind: "none" | "previous" | "week" | "year" | "day", day}: period B, next to period A.
function comparePeriod() {
  const a = period();
  const c = state.compare;
  let fromMs;
  let toMs;
  if (c.kind === "previous") {
    toMs = a.fromMs;
    fromMs = a.fromMs - (a.toMs - a.fromMs);
  } else if (c.kind === "week" || c.kind === "year") {
    const shift = c.kind === "week" ? { weeks: 1 } : { years: 1 };
    fromMs = localFromMs(a.fromMs).minus(shift).toMillis();
    toMs = localFromMs(a.toMs).minus(shift).toMillis();
  } else if (c.kind === "day") {
    const day = parseLocal(c.day) || localFromMs(Date.now()).startOf("day");
    fromMs = day.startOf("day").toMillis();
    toMs = day.startOf("day").plus({ days: 1 }).toMillis();
  } else {
    return null;
  }
  return { fromMs, toMs, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(), live: false };
}

let mapB = null;
let syncing = false;

function sync(from, to) {
  if (syncing || !to) return;
  syncing = true;
  to.jumpTo({ center: from.getCenter(), zoom: from.getZoom(), bearing: from.getBearing(), pitch: from.getPitch() });
  syncing = false;
}

function periodLabel(p) {
  const from = localFromMs(p.fromMs);
  const to = localFromMs(p.toMs);
  return `${from.toFormat("ccc d LLL yyyy HH:mm")} – ${to.toFormat(to.hasSame(from, "day") ? "HH:mm" : "ccc d LLL HH:mm")}`;
}

function renderCompare() {
  const compared = state.compare.kind === "none" ? null : comparePeriod();
  // The difference is drawn on the one map; side by side needs the second.
  const b = state.diff ? null : compared;
  document.body.classList.toggle("comparing", Boolean(b));
  $("compare").value = state.compare.kind;
  $("compare-day-box").hidden = state.compare.kind !== "day";
  $("diff-box").hidden = !compared;
  $("diff").checked = state.diff;
  $("label-a").hidden = !compared;
  $("label-b").hidden = !b;
  $("map-b").hidden = !b;
  if (compared && state.diff) $("label-a").textContent = `A − B · ${periodLabel(period())} − ${periodLabel(compared)}`;
  if (!map) return;
  map.resize();
  if (!b) {
    if (mapB) { mapB.remove(); mapB = null; window.bikesense.mapB = null; window.bikesense.mapBReady = false; }
    return;
  }
  $("label-a").textContent = `A · ${periodLabel(period())}`;
  $("label-b").textContent = `B · ${periodLabel(b)}`;
  if (!mapB) {
    mapB = new maplibregl.Map({
      container: "map-b", style: baseStyle(), center: map.getCenter(), zoom: map.getZoom(), maxZoom: 19,
      attributionControl: false,
      transformRequest: requestFor,
    });
    window.bikesense.mapB = mapB;
    window.bikesense.mapBReady = false;
    mapB.on("load", async () => {
      setHeatSource(mapB, comparePeriod());
      await addBasemap(mapB);
      window.bikesense.mapBReady = true;
      // The continuous scale is drawn on B from /v1/cells, once B can take a layer.
      if (state.scale === "continuous") checkCoverageSoon();
    });
    mapB.on("move", () => sync(mapB, map));
    mapB.on("click", (e) => showCell(e.lngLat));
  } else {
    mapB.resize();
    setHeatSource(mapB, b);
  }
  sync(map, mapB);
}

function setCompare(next) {
  state.compare = next;
  renderCompare();
  writeHash();
  if (!map || !state.meta) return;
  if (next.kind === "none" && state.scale === "bands") clearContinuous();
  renderLegend();
  checkCoverageSoon();
}

// ---------------------------------------------------------------- legend

function renderLegend() {
  const meta = state.meta;
  const scale = meta.scales.find((s) => s.metric === state.metric);
  const box = $("legend");
  box.replaceChildren();
  if (!scale) return;
  if (state.diff && state.compare.kind !== "none") {
    renderDifferenceLegend(box, scale);
    return;
  }
  if (state.scale === "continuous") {
    renderContinuousLegend(box, scale);
    return;
  }
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
    const name = maybe(`band_${band.label}`) || band.label;
    label.textContent = /\d/.test(band.label) ? band.label : `${name} (${range})`;
    row.append(sw, label);
    box.append(row);
  }
  const none = document.createElement("div");
  none.className = "row";
  none.innerHTML = '<span class="swatch none"></span><span></span>';
  none.lastChild.textContent = t("notShown", { k: meta.public_min_rides });
  box.append(none);
  const values = document.createElement("div");
  values.className = "values";
  values.id = "legend-values";
  values.textContent = t(valuesFor() === "corrected" ? "valuesCorrected" : "valuesRaw");
  box.append(values);
  const who = whoValues(state.metric);
  if (who) {
    const p = document.createElement("div");
    p.className = "who";
    p.textContent = t("whoLine", who);
    box.append(p);
  }
  if (scale.source) {
    const src = document.createElement("div");
    src.className = "source";
    src.textContent = t("source", { source: scale.source });
    box.append(src);
  }
}

function whoValues(metric) {
  const w = state.meta && state.meta.who_2021;
  if (!w || !w.annual || w.annual[metric] === undefined) return null;
  return { annual: w.annual[metric], day: w["24h"][metric] };
}

// ---------------------------------------------------------------- a continuous colour scale

// Viridis (matplotlib's default map): perceptually uniform and readable with colour-vision
// deficiencies; five stops spread over the lowest to the highest cell of the view.
const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];

// The cells of the view (the /v1/cells answer the coverage check already fetched), each
// filled along the ramp by its mean (LAeq for noise) between the lowest and the highest.
// Cells with too few readings are left out, as in the banded tiles. With two periods side
// by side (`bodyB`, period B's cells), both maps share one range, the lowest to the highest
// cell of either period, so that a colour means the same value on both.
function drawContinuous(body, bodyB = null) {
  const noise = state.metric === "noise";
  const cells = (b) => b.features
    .filter((f) => f.properties.status === "ok")
    .map((f) => ({ type: "Feature", geometry: f.geometry, properties: { v: noise ? f.properties.laeq_db : f.properties.mean } }))
    .filter((f) => f.properties.v !== null && f.properties.v !== undefined);
  const features = cells(body);
  const featuresB = bodyB ? cells(bodyB) : [];
  const values = [...features, ...featuresB].map((f) => f.properties.v);
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  state.scaleRange = values.length ? [lo, hi] : null;
  state.scaleShared = Boolean(bodyB);
  window.bikesense.scaleRange = state.scaleRange;
  window.bikesense.scaleShared = state.scaleShared;
  window.bikesense.continuousCellsB = bodyB ? featuresB.length : null;
  const span = hi > lo ? hi - lo : 1;
  const stops = RAMP.flatMap((colour, i) => [lo + (span * i) / (RAMP.length - 1), colour]);
  if (bodyB && mapB) drawCellValues(featuresB, stops, mapB);
  drawCellValues(features, stops);
}

// Cells filled by their value `v` along colour stops, in place of the heat tiles.
function drawCellValues(features, stops, m = map) {
  const data = { type: "FeatureCollection", features };
  const source = m.getSource("continuous");
  if (source) {
    source.setData(data);
  } else {
    m.addSource("continuous", { type: "geojson", data });
    m.addLayer({ id: "continuous", type: "fill", source: "continuous",
      paint: { "fill-color": "#000", "fill-opacity": 0.8, "fill-outline-color": "rgba(255,255,255,0.5)" } },
    m.getLayer("street-labels") ? "street-labels" : undefined);
  }
  m.setPaintProperty("continuous", "fill-color", ["interpolate", ["linear"], ["get", "v"], ...stops]);
  if (m.getLayer("heat")) m.setLayoutProperty("heat", "visibility", "none");
  renderLegend();
}

// ColorBrewer's RdBu, blue for lower in A than in B, red for higher; white is no change.
const DIVERGING = ["#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b"];

// A − B per cell, for the cells with enough readings in both periods, on a scale symmetric
// around zero out to the largest change in view.
function drawDifference(bodyA, bodyB) {
  const noise = state.metric === "noise";
  const value = (f) => (f.properties.status === "ok" ? (noise ? f.properties.laeq_db : f.properties.mean) : null);
  const before = new Map(bodyB.features.map((f) => [f.id, value(f)]));
  const features = bodyA.features
    .map((f) => ({ f, a: value(f), b: before.get(f.id) }))
    .filter(({ a, b }) => a !== null && a !== undefined && b !== null && b !== undefined)
    .map(({ f, a, b }) => ({ type: "Feature", geometry: f.geometry, properties: { v: a - b } }));
  const reach = Math.max(1e-6, ...features.map((f) => Math.abs(f.properties.v)));
  state.scaleRange = features.length ? [-reach, reach] : null;
  window.bikesense.scaleRange = state.scaleRange;
  window.bikesense.diffCells = features.length;
  drawCellValues(features, DIVERGING.flatMap((colour, i) => [-reach + (2 * reach * i) / (DIVERGING.length - 1), colour]));
}

function renderDifferenceLegend(box, scale) {
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = t("diffTitle", { metric: metricLabel(state.metric), unit: scale.unit });
  const bar = document.createElement("div");
  bar.className = "ramp";
  bar.style.background = `linear-gradient(to right, ${DIVERGING.join(", ")})`;
  const ends = document.createElement("div");
  ends.className = "ramp-ends";
  const reach = state.scaleRange ? state.scaleRange[1] : null;
  const fmt = (v) => (v === null ? "—" : `${v > 0 ? "+" : ""}${v.toFixed(1)} ${scale.unit}`);
  ends.append(Object.assign(document.createElement("span"), { textContent: fmt(reach === null ? null : -reach) }),
    Object.assign(document.createElement("span"), { textContent: "0" }),
    Object.assign(document.createElement("span"), { textContent: fmt(reach) }));
  const note = document.createElement("div");
  note.className = "who";
  note.textContent = t("diffNote", { n: window.bikesense.diffCells ?? 0 });
  box.append(title, bar, ends, note);
}

function clearContinuous() {
  state.scaleRange = null;
  state.scaleShared = false;
  window.bikesense.scaleRange = null;
  window.bikesense.scaleShared = false;
  for (const m of [map, mapB]) {
    if (!m || !m.isStyleLoaded()) continue;
    if (m.getLayer("continuous")) m.removeLayer("continuous");
    if (m.getSource("continuous")) m.removeSource("continuous");
    if (m.getLayer("heat")) m.setLayoutProperty("heat", "visibility", "visible");
  }
}

function renderContinuousLegend(box, scale) {
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = t("continuousTitle", { metric: metricLabel(state.metric), unit: scale.unit });
  box.append(title);
  const bar = document.createElement("div");
  bar.className = "ramp";
  bar.style.background = `linear-gradient(to right, ${RAMP.join(", ")})`;
  const ends = document.createElement("div");
  ends.className = "ramp-ends";
  const [lo, hi] = state.scaleRange || [null, null];
  const fmt = (v) => (v === null ? "—" : `${v.toFixed(1)} ${scale.unit}`);
  ends.append(Object.assign(document.createElement("span"), { textContent: fmt(lo) }),
    Object.assign(document.createElement("span"), { textContent: fmt(hi) }));
  const note = document.createElement("div");
  note.className = "who";
  note.textContent = t("continuousNote");
  box.append(bar, ends, note);
  if (state.scaleShared) {
    const shared = document.createElement("div");
    shared.className = "who";
    shared.id = "legend-shared";
    shared.textContent = t("continuousShared");
    box.append(shared);
  }
  const who = whoValues(state.metric);
  if (who) {
    const p = document.createElement("div");
    p.className = "who";
    p.textContent = t("whoLine", who);
    box.append(p);
  }
}

// ---------------------------------------------------------------- coverage: "no data" said so

let coverageTimer = null;
let coverageSeq = 0;

function checkCoverageSoon() {
  clearTimeout(coverageTimer);
  coverageTimer = setTimeout(checkCoverage, 400);
}

async function checkCoverage() {
  if (!map || !state.meta) return;
  if (!periodIsValid()) {
    setProblem("empty", "periodEmpty");
    return;
  }
  const seq = ++coverageSeq;
  const b = map.getBounds();
  const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(",");
  const { from, to } = period();
  // At the resolution the tiles draw: a cell counts when its centre is in view.
  const c = map.getCenter();
  const q = new URLSearchParams({ metric: state.metric, bbox, from, to,
    resolution: String(resolutionForZoom(map.getZoom(), c.lat)), values: valuesFor() });
  try {
    const body = await getJSON(`/v1/cells?${q}`);
    if (seq !== coverageSeq) return;
    if (state.diff && state.compare.kind !== "none") {
      const pb = comparePeriod();
      const qb = new URLSearchParams(q);
      qb.set("from", pb.from);
      qb.set("to", pb.to);
      const bodyB = await getJSON(`/v1/cells?${qb}`);
      if (seq !== coverageSeq) return;
      drawDifference(body, bodyB);
    } else if (state.scale === "continuous") {
      // Side by side, B's cells too, for one range over both periods.
      let bodyB = null;
      if (state.compare.kind !== "none" && mapB && window.bikesense.mapBReady) {
        const pb = comparePeriod();
        const qb = new URLSearchParams(q);
        qb.set("from", pb.from);
        qb.set("to", pb.to);
        bodyB = await getJSON(`/v1/cells?${qb}`);
        if (seq !== coverageSeq) return;
      }
      drawContinuous(body, bodyB);
    }
    const n = body.features.length;
    window.bikesense.cellsInView = n;
    // Data held back for privacy around the view (the API says so per whole district and
    // day, never per cell) is said as that, not as "no data".
    const withheld = Boolean(body.withheld);
    window.bikesense.withheld = withheld;
    setProblem("database", null);
    setProblem("server", null);
    const what = metricLabel(state.metric);
    const empty = withheld ? (n > 0 ? "withheldSome" : "withheldAll")
      : n > 0 ? null : state.meta.role === "public" ? "noPublicData" : "noData";
    setProblem("empty", empty, { metric: what, k: state.meta.public_min_rides });
  } catch (err) {
    if (seq !== coverageSeq) return;
    window.bikesense.cellsInView = null;
    // A view too large to count is no failure; anything else is said as what it is.
    if (err.status !== 400) reportFailure(err);
  }
}

// ---------------------------------------------------------------- cell panel

function resolutionForZoom(zoom, lat) {
  const mPerPx = EARTH_CIRCUMFERENCE_M * Math.cos((lat * Math.PI) / 180) / 256 / 2 ** Math.floor(zoom);
  const resolutions = [...state.meta.resolutions].sort((a, b) => b - a);
  for (const r of resolutions) {
    if (state.meta.edge_m[r] / mPerPx >= state.meta.min_edge_px) return r;
  }
  return resolutions[resolutions.length - 1];
}

// The finest bucket the role may see that keeps the chart readable (at most ~200 points).
function bucketFor(hours) {
  const fine = state.meta.role !== "public";
  if (fine && hours <= 48) return "15m";
  if (hours <= 48) return "1h";
  if (hours <= 8 * 24) return fine ? "1h" : "3h";
  return hours <= 31 * 24 ? "6h" : "1d";
}

function seriesQuery(lngLat) {
  const res = resolutionForZoom(map.getZoom(), lngLat.lat);
  const p = period();
  return new URLSearchParams({
    metric: state.metric, lat: lngLat.lat.toFixed(6), lon: lngLat.lng.toFixed(6),
    resolution: String(res), bucket: bucketFor(p.hours), from: p.from, to: p.to,
    values: valuesFor(),
  });
}

function nearestStreet(lngLat) {
  if (!state.streets || !state.streets.length) return null;
  const kx = Math.cos((lngLat.lat * Math.PI) / 180);
  let best = null;
  let bestD = Infinity;
  for (const f of state.streets) {
    const c = f.geometry.coordinates;
    for (let i = 1; i < c.length; i += 1) {
      const ax = (c[i - 1][0] - lngLat.lng) * kx, ay = c[i - 1][1] - lngLat.lat;
      const bx = (c[i][0] - lngLat.lng) * kx, by = c[i][1] - lngLat.lat;
      const dx = bx - ax, dy = by - ay;
      const t = Math.max(0, Math.min(1, -(ax * dx + ay * dy) / (dx * dx + dy * dy || 1)));
      const d = Math.hypot(ax + t * dx, ay + t * dy);
      if (d < bestD) { bestD = d; best = f.properties.name; }
    }
  }
  return bestD * 111320 < 150 ? best : null;
}

async function highlightCell(cell) {
  window.bikesense.selectedCell = cell;
  const h3 = await import("/static/h3/h3-js.es.js");
  const ring = h3.cellToBoundary(cell, true);
  const data = { type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [ring] } };
  const source = map.getSource("selected");
  if (source) {
    source.setData(data);
  } else {
    map.addSource("selected", { type: "geojson", data });
    map.addLayer({ id: "selected-halo", type: "line", source: "selected", paint: { "line-color": "#ffffff", "line-width": 6 } });
    map.addLayer({ id: "selected", type: "line", source: "selected", paint: { "line-color": "#1d2630", "line-width": 3 } });
  }
  window.bikesense.highlighted = cell;
}

function clearHighlight() {
  state.selected = null;
  window.bikesense.selectedCell = null;
  window.bikesense.highlighted = null;
  const source = map.getSource("selected");
  if (source) source.setData({ type: "FeatureCollection", features: [] });
}

async function showCell(lngLat) {
  state.selected = { lngLat };
  const q = seriesQuery(lngLat);
  $("chart-panel").hidden = false;
  $("chart-title").textContent = t("loading");
  try {
    const body = await getJSON(`/v1/timeseries?${q}`);
    if (!state.selected || state.selected.lngLat !== lngLat) return;
    const what = metricLabel(state.metric);
    const bucket = q.get("bucket");
    $("chart-title").textContent = t("perBucket", { metric: what, unit: body.unit, bucket });
    const street = nearestStreet(lngLat);
    $("chart-where").textContent = (street ? t("near", { street }) : "")
      + t("cellAt", { cell: body.cell, res: body.resolution });
    $("chart-note").textContent = t(state.metric === "noise" ? "chartNoteNoise" : "chartNote");
    drawChart(body);
    window.bikesense.lastSeries = body;
    await highlightCell(body.cell);
  } catch (err) {
    $("chart-title").textContent = t("cellFailed");
    $("chart-where").textContent = "";
    destroyPlot();
    $("chart").textContent = String(err.message || err);
    if (err instanceof HttpError && err.status !== 400 && err.status !== 403) reportFailure(err);
  }
}

function destroyPlot() {
  if (plot) plot.destroy();
  plot = null;
  window.bikesense.plot = null;
}

function drawChart(body) {
  destroyPlot();
  const el = $("chart");
  el.replaceChildren();
  const noise = body.metric === "noise";
  const value = (p) => (noise ? p.laeq_db : p.mean);
  if (!body.points.some((p) => value(p) !== null)) {
    el.textContent = t(state.meta.role === "public" ? "cellNoPublicData" : "cellNoData");
    return;
  }
  const unit = body.unit;
  const xs = body.points.map((p) => Date.parse(p.start) / 1000);
  const t0 = Date.parse(body.time_from) / 1000;
  const t1 = Date.parse(body.time_to) / 1000;
  const ok = body.points.map((p) => (p.status === "ok" ? value(p) : null));
  const few = body.points.map((p) => (p.status === "ok" ? null : value(p)));
  // The 95 % interval: of the mean, or for noise of LAeq (docs/statistics.md).
  const lo = body.points.map((p) => p.ci95_low ?? null);
  const hi = body.points.map((p) => p.ci95_high ?? null);
  // A bucket with a value but no interval says why (interval_reason, e.g. one ride).
  const noInterval = (i) => {
    const p = body.points[i];
    if (!p || !p.interval_reason || value(p) === null || value(p) === undefined) return null;
    return maybe(`noInterval_${p.interval_reason}`) || t("noInterval", { reason: p.interval_reason });
  };
  const fmtInterval = (u, v, s, i) => noInterval(i) ?? fmt(v);
  const scale = state.meta.scales.find((s) => s.metric === body.metric);
  const who = whoValues(body.metric);
  const fmt = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} ${unit}`);
  const what = metricLabel(body.metric);
  const width = Math.max(260, el.clientWidth || 400);
  const opts = {
    width, height: 220,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), state.tz),
    // The whole period on the x axis (one bucket alone would be stretched over years), and
    // the WHO 24-hour guideline within the y axis so the data can be read against it.
    scales: {
      x: { time: true, range: () => [t0, t1] },
      y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max((max ?? 1) * 1.15, who ? who.day * 1.1 : 0) || 1] },
    },
    axes: [
      { label: t("axisTime", { tz: state.tz }), labelSize: 18, size: 52, values: timeTicks },
      { label: `${what} (${unit})`, labelSize: 18, size: 46 },
    ],
    series: [
      { label: t("seriesTime"), value: (u, v) => (v === null ? "—" : localFromMs(v * 1000).toFormat("ccc d LLL HH:mm")) },
      { label: t(noise ? "seriesLaeq" : "seriesMean"), stroke: "#1d2630", width: 2, spanGaps: false, value: (u, v) => fmt(v),
        points: { show: true, size: 5, fill: "#1d2630" } },
      { label: t("seriesFew"), stroke: "#1d2630", width: 1, dash: [4, 4], value: (u, v) => fmt(v),
        points: { show: true, size: 6, fill: "#ffffff" } },
      { label: t("seriesLow"), stroke: "rgba(29,38,48,0.25)", width: 1, value: fmtInterval },
      { label: t("seriesHigh"), stroke: "rgba(29,38,48,0.25)", width: 1, value: fmtInterval },
    ],
    bands: [{ series: [4, 3], fill: "rgba(29,38,48,0.12)" }],
    hooks: { draw: [(u) => drawReferenceLines(u, scale, who)] },
    legend: { live: true },
    cursor: { points: { size: 8 } },
  };
  plot = new uPlot(opts, [xs, ok, few, lo, hi], el);
  window.bikesense.plot = plot;
}

// Tick labels in local time, 24-hour clock: the date under the first tick and each new day.
function timeTicks(u, splits) {
  const days = (u.scales.x.max - u.scales.x.min) / 86400;
  let last = null;
  return splits.map((v) => {
    const t = localFromMs(v * 1000);
    if (days > 3) return t.toFormat("d LLL");
    const day = t.toISODate();
    const label = day !== last ? t.toFormat("HH:mm\nd LLL") : t.toFormat("HH:mm");
    last = day;
    return label;
  });
}

// The band limits (coloured) and the WHO 24-hour guideline (dashed) as horizontal lines.
function drawReferenceLines(u, scale, who) {
  const ctx = u.ctx;
  const [ymin, ymax] = [u.scales.y.min, u.scales.y.max];
  const left = u.bbox.left, right = u.bbox.left + u.bbox.width;
  const line = (v, colour, dash, text, atLeft = false) => {
    if (v <= ymin || v >= ymax) return;
    const y = Math.round(u.valToPos(v, "y", true)) + 0.5;
    ctx.save();
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash(dash.map((d) => d * devicePixelRatio));
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(right, y);
    ctx.stroke();
    ctx.fillStyle = "#3c4650";
    ctx.font = `${10 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.textAlign = atLeft ? "left" : "right";
    ctx.fillText(text, atLeft ? left + 4 : right - 4, y - 3 * devicePixelRatio);
    ctx.restore();
  };
  if (scale) {
    for (const band of scale.bands) {
      if (band.lower > 0) line(band.lower, band.colour, [], `${maybe(`band_${band.label}`) || band.label} ≥ ${band.lower}`);
    }
  }
  if (who) line(who.day, "#1d2630", [6, 4], t("whoChart", { value: who.day }), true);
}

async function downloadCsv() {
  if (!state.selected) return;
  const q = seriesQuery(state.selected.lngLat);
  q.set("format", "csv");
  try {
    const response = await request(`/v1/timeseries?${q}`);
    const blob = await response.blob();
    const name = (response.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    saveBlob(blob, name ? name[1] : `${state.metric}.csv`);
    window.bikesense.downloads = (window.bikesense.downloads || 0) + 1;
  } catch (err) {
    reportFailure(err);
  }
}

// ---------------------------------------------------------------- officers: fleet health

// A kit silent this long, or this low on battery, is flagged in the table.
const SILENT_WARN_MS = HOUR_MS;
const SILENT_BAD_MS = 24 * HOUR_MS;
const BATTERY_WARN_PCT = 20;

function ago(ms) {
  const minutes = Math.round((Date.now() - ms) / MINUTE_MS);
  if (minutes < 1) return t("justNow");
  if (minutes < 90) return t("minAgo", { n: minutes });
  const hours = Math.round(minutes / 60);
  return hours < 48 ? t("hoursAgo", { n: hours }) : t("daysAgo", { n: Math.round(hours / 24) });
}

async function showFleet() {
  $("fleet-panel").hidden = false;
  $("fleet-summary").textContent = t("loading");
  $("fleet-table").tHead.rows[0].replaceChildren(...t("fleetColumns").map((c) => {
    const th = document.createElement("th");
    th.textContent = c;
    return th;
  }));
  const body = $("fleet-table").tBodies[0];
  body.replaceChildren();
  let fleet;
  try {
    fleet = await getJSON("/v1/kits");
  } catch (err) {
    $("fleet-summary").textContent = t("fleetFailed", { detail: err.message || err });
    if (err instanceof HttpError && err.status !== 400) reportFailure(err);
    return;
  }
  let silent = 0;
  let low = 0;
  let rejectedTotal = 0;
  const kits = [...fleet.kits].sort((a, b) => Date.parse(a.last_seen_at || 0) - Date.parse(b.last_seen_at || 0));
  for (const kit of kits) {
    const seenMs = kit.last_seen_at ? Date.parse(kit.last_seen_at) : null;
    const quietMs = seenMs === null ? Infinity : Date.now() - seenMs;
    const rejected = kit.rejected.reduce((n, r) => n + r.count, 0);
    rejectedTotal += rejected;
    if (quietMs > SILENT_WARN_MS) silent += 1;
    if (kit.battery_pct !== null && kit.battery_pct < BATTERY_WARN_PCT) low += 1;
    const tr = document.createElement("tr");
    tr.className = quietMs > SILENT_BAD_MS ? "bad"
      : quietMs > SILENT_WARN_MS || (kit.battery_pct !== null && kit.battery_pct < BATTERY_WARN_PCT) || rejected > 0 ? "warn" : "";
    const cells = [
      kit.pseudonym, kit.status,
      seenMs === null ? t("never") : `${ago(seenMs)} (${localFromMs(seenMs).toFormat("d LLL HH:mm")})`,
      kit.battery_pct === null ? "—" : `${Math.round(kit.battery_pct)} %`,
      kit.firmware_version || "—",
      kit.readings_stored === null ? "—" : kit.readings_stored.toLocaleString("en"),
      rejected ? kit.rejected.map((r) => `${r.reason}: ${r.count}`).join(", ") : "0",
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  const unknown = fleet.rejected_unknown_kit.reduce((n, r) => n + r.count, 0);
  $("fleet-summary").textContent = t("fleetSummary", {
    n: kits.length, since: localFromMs(Date.parse(fleet.since)).toFormat("d LLL HH:mm"), silent, low,
    pct: BATTERY_WARN_PCT, rejected: rejectedTotal, unknown: unknown ? t("fleetUnknown", { n: unknown }) : "" });
  window.bikesense.fleetKits = kits.length;
}

// ---------------------------------------------------------------- researchers: export

async function exportView() {
  if (!map || !periodIsValid()) return;
  const b = map.getBounds();
  const { from, to } = period();
  const format = $("export-format").value;
  const q = new URLSearchParams({ format, from, to,
    bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(",") });
  $("export-status").textContent = t("exporting");
  try {
    // With the key as a header, so through fetch; the file is kept in memory until saved:
    // for exports beyond the view of a town, use the API directly (docs/api.md, Exports).
    const response = await request(`/v1/exports/readings?${q}`);
    const reader = response.body.getReader();
    const parts = [];
    let bytes = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      bytes += value.length;
      $("export-status").textContent = t("exportingMb", { mb: (bytes / 1e6).toFixed(1) });
    }
    const name = (response.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    saveBlob(new Blob(parts, { type: response.headers.get("Content-Type") || "" }),
      name ? name[1] : `readings.${format}`);
    $("export-status").textContent = t("exportSaved", { mb: (bytes / 1e6).toFixed(1), format });
    window.bikesense.exports = (window.bikesense.exports || 0) + 1;
  } catch (err) {
    $("export-status").textContent = t("exportFailed", { detail: err.message || err });
    if (err instanceof HttpError && err.status !== 400) reportFailure(err);
  }
}

function saveBlob(blob, filename) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

function renderRoleTools() {
  const role = state.meta ? state.meta.role : "public";
  $("fleet-open").hidden = !["officer", "admin"].includes(role);
  $("export-box").hidden = !["researcher", "admin"].includes(role);
  if ($("fleet-open").hidden) $("fleet-panel").hidden = true;
}

// ---------------------------------------------------------------- live updates and health

function renderLive() {
  const dot = $("live-dot");
  const text = $("live-text");
  let kind;
  let label;
  if (state.health === "down") {
    kind = "off"; label = t("liveServerAway");
  } else if (state.live !== "open") {
    kind = "off";
    label = t({ connecting: "liveConnecting", reconnecting: "liveReconnecting" }[state.live] || "liveClosed");
  } else if (state.health === "degraded") {
    kind = "stalled"; label = t("liveStalled");
  } else if (state.health === "ok") {
    kind = "on";
    label = state.lastLiveMs ? t("liveLast", { time: localFromMs(state.lastLiveMs).toFormat("HH:mm:ss") }) : t("liveOn");
  } else {
    kind = "off"; label = t("liveConnecting");
  }
  dot.className = `dot ${kind}`;
  text.textContent = label;
  window.bikesense.live = kind;
}

async function checkHealth() {
  const before = state.health;
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    state.health = body.database === "ok" ? "ok" : "degraded";
    setProblem("server", null);
    setProblem("database", state.health === "ok" ? null : "databaseAway");
  } catch {
    state.health = "down";
    setProblem("server", "serverAway");
  }
  renderLive();
  if (before !== "ok" && before !== "unknown" && state.health === "ok" && map) {
    // Back: draw again what failed while it was away.
    state.version += 1;
    setHeatSource();
    checkCoverageSoon();
  }
}

let livePending = null;
let liveLast = 0;

function refreshSoon() {
  if (livePending) return;
  const wait = Math.max(0, liveLast + LIVE_REFRESH_MS - Date.now());
  livePending = setTimeout(() => {
    livePending = null;
    liveLast = Date.now();
    window.bikesense.liveRefreshes = (window.bikesense.liveRefreshes || 0) + 1;
    state.version += 1;
    setHeatSource();
    checkCoverageSoon();
  }, wait);
}

// Does a live event touch what the map shows? Its metric, a window inside the period, the
// resolution drawn, and (keyed roles get the cells) a cell in view. Anything else leaves
// the tiles alone; `resync` (events were missed) always refreshes.
async function touchesView(kind, data) {
  if (kind === "resync") return true;
  if (!map || !state.meta) return false;
  const p = period();
  if (!p.live && !(data.windows || []).length) return false;
  if (data.metrics && !data.metrics.includes(state.metric)) return false;
  if (data.windows && !data.windows.some(([windowS, startMs]) => startMs < p.toMs && startMs + windowS * 1000 > p.fromMs)) return false;
  const res = resolutionForZoom(map.getZoom(), map.getCenter().lat);
  if (data.resolutions && !data.resolutions.includes(res)) return false;
  if (data.cells && data.cells.length && !data.cells_truncated) {
    const h3 = await import("/static/h3/h3-js.es.js");
    const bounds = map.getBounds();
    return data.cells.some((cell) => {
      const [lat, lng] = h3.cellToLatLng(String(cell));
      return bounds.contains([lng, lat]);
    });
  }
  return true;
}

async function handleLive(kind, data) {
  window.bikesense.liveEvents += 1;
  state.lastLiveMs = Date.now();
  renderLive();
  if (await touchesView(kind, data)) refreshSoon();
}

function connectLive() {
  // EventSource cannot send headers; the public stream is enough to know when to refresh.
  const source = new EventSource("/v1/live");
  source.addEventListener("open", () => { state.live = "open"; renderLive(); });
  source.addEventListener("error", () => {
    state.live = source.readyState === EventSource.CLOSED ? "closed" : "reconnecting";
    renderLive();
  });
  for (const kind of ["aggregates", "resync"]) {
    source.addEventListener(kind, (ev) => handleLive(kind, JSON.parse(ev.data || "{}")));
  }
}
window.bikesense.handleLive = handleLive;

// ---------------------------------------------------------------- start, and start again

function fillMetrics() {
  const select = $("metric");
  select.replaceChildren();
  for (const m of state.meta.metrics) {
    const option = document.createElement("option");
    option.value = m;
    option.textContent = metricLabel(m);
    select.append(option);
  }
  if (!state.meta.metrics.includes(state.metric)) state.metric = state.meta.metrics[0];
  select.value = state.metric;
}

function createMap() {
  const at = (params.get("at") || "").split(",").map(Number);
  const fromHash = at.length === 3 && at.every(Number.isFinite);
  map = new maplibregl.Map({
    container: "map",
    style: baseStyle(),
    center: fromHash ? [at[1], at[0]] : state.meta.map_center,
    zoom: fromHash ? at[2] : state.meta.map_zoom,
    maxZoom: 19,
    attributionControl: { compact: true },
    transformRequest: requestFor,
  });
  window.bikesense.map = map;
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl(), "bottom-left");

  map.on("load", async () => {
    setHeatSource();
    window.bikesense.basemap = await addBasemap();
    window.bikesense.ready = true;
    renderCompare();
    checkCoverageSoon();
  });
  map.on("sourcedata", (e) => {
    if (e.sourceId === "heat" && e.tile) {
      window.bikesense.tileLoads += 1;
      setProblem("tiles", null);
    }
  });
  map.on("error", (e) => {
    if (e.sourceId !== "heat") return;
    window.bikesense.tileErrors += 1;
    const status = e.error && e.error.status;
    if (status === 401 || status === 403) reportFailure(new HttpError(status, "tiles refused"));
    else if (status === 503) reportFailure(new HttpError(503, "database unavailable"));
    else setProblem("tiles", "tilesFailed");
  });
  map.on("click", (e) => {
    if (!periodIsValid()) return;
    showCell(e.lngLat);
  });
  map.on("moveend", () => { writeHash(); checkCoverageSoon(); });
  map.on("move", () => sync(map, mapB));
}

function periodChanged() {
  if (!map || !state.meta) return;
  setHeatSource();
  renderCompare();
  checkCoverageSoon();
  if (state.selected && !$("chart-panel").hidden) showCell(state.selected.lngLat);
}

let retryTimer = null;

async function start() {
  clearTimeout(retryTimer);
  let meta;
  try {
    meta = await getJSON("/v1/meta");
  } catch (err) {
    reportFailure(err);
    if (!(err instanceof HttpError) || ![401, 403].includes(err.status)) {
      retryTimer = setTimeout(start, RETRY_START_MS);
    }
    return false;
  }
  setProblem("key", null);
  setProblem("server", null);
  state.meta = meta;
  $("note").textContent = language() === "en" ? meta.note : (maybe("indicativeNote") || meta.note);
  fillMetrics();
  renderLegend();
  renderPeriod();
  $("role").textContent = state.key ? t("role", { role: meta.role }) : t("rolePublic");
  renderRoleTools();
  if (!map) {
    createMap();
    connectLive();
  } else {
    state.version += 1;
    periodChanged();
  }
  window.bikesense.started = true;
  return true;
}

async function useKey(key) {
  state.key = key;
  if (key) sessionStorage.setItem("bikesense-key", key); else sessionStorage.removeItem("bikesense-key");
  $("key").value = key;
  $("role").textContent = t("checking");
  if (!(await start())) $("role").textContent = t("keyRefusedShort");
}

function setPanelOpen(open) {
  $("panel").classList.toggle("collapsed", !open);
  $("panel-body").hidden = !open;
  $("panel-toggle").setAttribute("aria-expanded", String(open));
  $("panel-toggle").textContent = t(open ? "hide" : "show");
}

// Everything said in words again, in the language now chosen.
function relabel() {
  setLanguage($("lang").value);
  setPanelOpen(!$("panel").classList.contains("collapsed"));
  renderBanner();
  renderPeriod();
  renderLive();
  renderCompare();
  if (state.meta) {
    fillMetrics();
    renderLegend();
    $("note").textContent = language() === "en" ? state.meta.note : (maybe("indicativeNote") || state.meta.note);
    $("role").textContent = state.key ? t("role", { role: state.meta.role }) : t("rolePublic");
    if (state.selected && !$("chart-panel").hidden) showCell(state.selected.lngLat);
    if (!$("fleet-panel").hidden) showFleet();
  }
  writeHash();
}

// Everything that must work whatever the server says is wired before the first request.
function wireControls() {
  $("lang").value = chooseLanguage(params.get("lang"));
  setLanguage($("lang").value);
  $("lang").addEventListener("change", relabel);
  $("panel-toggle").addEventListener("click", () => setPanelOpen($("panel").classList.contains("collapsed")));
  // On a phone the map comes first: the panel starts folded to one line.
  setPanelOpen(!matchMedia("(max-width: 600px)").matches);

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useKey($("key").value.trim());
  });
  $("key-forget").addEventListener("click", () => useKey(""));
  $("key").value = state.key;

  $("metric").addEventListener("change", () => {
    state.metric = $("metric").value;
    renderLegend();
    renderPeriod();
    writeHash();
    periodChanged();
  });
  $("range").addEventListener("change", () => {
    const v = $("range").value;
    const now = localFromMs(Date.now());
    if (v === "day") {
      $("day").value = $("day").value || now.toISODate();
      setPeriod({ kind: "day", day: $("day").value });
    } else if (v === "custom") {
      const { fromMs, toMs } = period();
      $("from").value = $("from").value || localFromMs(fromMs).toFormat("yyyy-LL-dd'T'HH:mm");
      $("to").value = $("to").value || localFromMs(toMs).toFormat("yyyy-LL-dd'T'HH:mm");
      setPeriod({ kind: "custom", from: $("from").value, to: $("to").value });
    } else {
      setPeriod({ kind: "last", hours: Number(v) });
    }
  });
  $("day").addEventListener("change", () => {
    if ($("day").value) setPeriod({ kind: "day", day: $("day").value });
  });
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      if ($("from").value && $("to").value) setPeriod({ kind: "custom", from: $("from").value, to: $("to").value });
    });
  }
  $("chart-close").addEventListener("click", () => {
    $("chart-panel").hidden = true;
    destroyPlot();
    clearHighlight();
  });
  $("chart-download").addEventListener("click", downloadCsv);
  $("fleet-open").addEventListener("click", showFleet);
  $("fleet-close").addEventListener("click", () => { $("fleet-panel").hidden = true; });
  $("export").addEventListener("click", exportView);
  $("scale").value = state.scale;
  $("scale").addEventListener("change", () => {
    state.scale = $("scale").value;
    writeHash();
    if (!map || !state.meta) return;
    if (state.scale === "bands") clearContinuous();
    renderLegend();
    checkCoverageSoon();
  });
  $("compare").addEventListener("change", () => {
    const kind = $("compare").value;
    if (kind === "day" && !$("compare-day").value) {
      $("compare-day").value = localFromMs(period().fromMs).minus({ days: 7 }).toISODate();
    }
    setCompare({ kind, day: $("compare-day").value });
  });
  $("diff").addEventListener("change", () => {
    state.diff = $("diff").checked;
    renderCompare();
    writeHash();
    if (!map || !state.meta) return;
    if (!state.diff && state.scale === "bands") clearContinuous();
    renderLegend();
    checkCoverageSoon();
  });
  $("compare-day").addEventListener("change", () => {
    if ($("compare-day").value) setCompare({ kind: "day", day: $("compare-day").value });
  });
  if (state.compare.kind === "day") $("compare-day").value = state.compare.day;

  state.period = readHashPeriod();
  if (state.period.kind === "day") $("day").value = state.period.day;
  if (state.period.kind === "custom") { $("from").value = state.period.from; $("to").value = state.period.to; }
  renderPeriod();
}

wireControls();
renderLive();
checkHealth();
setInterval(checkHealth, HEALTH_EVERY_MS);
start().catch((err) => {
  window.bikesense.error = String(err);
  setProblem("server", "failedToStart", { detail: String(err) });
});
