// The page's words in English and Dutch. t(key, vars) fills {name} placeholders; a key
// missing in Dutch falls back to English. The language is the URL's (#lang=nl), else the
// one chosen before in this browser, else the browser's first of en / nl.

const MESSAGES = {
  en: {
    hide: "Hide", show: "Show", metric: "Metric", period: "Period",
    colourScale: "Colour scale", scaleBands: "Air-quality bands", scaleContinuous: "Continuous, over the view's range",
    continuousTitle: "{metric} ({unit}), continuous scale: lowest to highest cell in view",
    continuousNote: "Not the air-quality bands: the colours compare the cells of this view and period with each other only.",
    continuousShared: "Both maps (A and B) use this one range, the lowest to the highest cell of either period: a colour is the same value on both.",
    diffLabel: "as one map of the difference (A − B)",
    diffTitle: "{metric} ({unit}): period A minus period B, per cell",
    diffNote: "{n} cells with enough readings in both periods; red: higher in A, blue: lower.",
    compare: "Compare with", compareNone: "—", comparePrevious: "the period before",
    compareWeek: "a week earlier", compareYear: "a year earlier", compareDay: "one day…",
    last1: "Last hour", last6: "Last 6 hours", last24: "Last 24 hours", last168: "Last 7 days",
    last720: "Last 30 days", oneDay: "One day…", fromTo: "From … to …", from: "From", to: "To",
    lastHours: "last {hours} h",
    periodInvalid: "The end must come after the start.",
    apiKey: "API key", useKey: "Use key", noKey: "No key (public)",
    rolePublic: "role: public (no key)", role: "role: {role}", checking: "checking…",
    keyRefusedShort: "key refused",
    fleetHealth: "Fleet health", exportView: "Export readings in view",
    exportTitle: "raw readings in the view and the period",
    downloadCsv: "Download CSV", close: "close", language: "Language",
    // problems
    keyRefused: "The API key was refused ({detail}): it may be mistyped or revoked.",
    enterAnotherKey: "Enter another key", continueWithoutKey: "Continue without a key",
    serverAway: "The bikesense server cannot be reached: the map shows nothing new until it answers. Retrying…",
    databaseAway: "The database is unavailable: the map cannot show data now (this is not \"no data\"). Retrying…",
    serverAnswered: "The server answered {status}: {detail}",
    tilesFailed: "Some map tiles failed to load; the map may be incomplete.",
    periodEmpty: "The period is empty: its end must come after its start.",
    noPublicData: "No public {metric} data in view for this period (a cell shows once {k} rides have passed through it). Try a longer period, another day, or zoom out.",
    noData: "No {metric} data in view for this period. Try a longer period, another day, or zoom out.",
    withheldAll: "Data withheld for privacy: {metric} was measured in or around this view in this period, but by fewer than {k} rides per street block and hour, so none of it is public. This is not \u201cno data\u201d.",
    withheldSome: "Some data withheld for privacy: in or around this view, {metric} measured by fewer than {k} rides per street block and hour is not shown.",
    failedToStart: "The map failed to start: {detail}",
    // live
    liveOn: "live updates: on", liveLast: "live updates: on, last {time}",
    liveServerAway: "live updates: off (server unreachable)",
    liveStalled: "live updates: stalled (database unavailable)",
    liveConnecting: "live updates: connecting", liveReconnecting: "live updates: reconnecting",
    liveClosed: "live updates: closed",
    // legend
    notShown: "no data, too little data, or fewer than {k} rides (not public): not shown",
    valuesCorrected: "Corrected values: each kit's readings corrected against official reference stations; cells not fully corrected are not shown (#values=raw for raw readings)",
    valuesRaw: "Raw readings, as the kits measured them (not corrected against reference stations)",
    whoLine: "WHO 2021 guideline: {annual} µg/m³ annual, {day} µg/m³ 24-hour",
    source: "Source: {source}",
    // chart
    loading: "Loading…", perBucket: "{metric} ({unit}), per {bucket}",
    near: "near {street} · ", cellAt: "cell {cell} (resolution {res})",
    chartNoteNoise: "Line: LAeq (energy average); shaded: its 95 % interval (rides as the unit); hollow points: too few readings. Hover for values.",
    chartNote: "Line: mean; shaded: 95 % interval (rides as the unit); hollow points: too few readings; coloured lines: band limits. Hover for values.",
    cellFailed: "Could not load this cell",
    cellNoPublicData: "No public data for this cell in the period (fewer rides than the privacy threshold, or none).",
    cellNoData: "No data for this cell in the period.",
    axisTime: "local time ({tz})", seriesTime: "time", seriesMean: "mean", seriesLaeq: "LAeq",
    seriesFew: "too few readings", seriesLow: "95 % low", seriesHigh: "95 % high",
    noInterval: "no interval: {reason}", noInterval_single_ride: "no interval: one ride",
    noInterval_no_spread: "no interval: fewer than two readings", noInterval_zero_mean: "no interval: mean of zero",
    whoChart: "WHO 24-h guideline {value}",
    // fleet and export
    fleetFailed: "Could not load the fleet: {detail}",
    fleetSummary: "{n} kits since {since}: {silent} silent for over an hour, {low} below {pct} % battery, {rejected} frames rejected{unknown}.",
    fleetUnknown: ", {n} more from unknown kits",
    fleetColumns: ["kit", "status", "last seen", "battery", "firmware", "readings (24 h)", "rejected"],
    never: "never", justNow: "just now", minAgo: "{n} min ago", hoursAgo: "{n} h ago", daysAgo: "{n} days ago",
    exporting: "Exporting…", exportingMb: "Exporting… {mb} MB", exportSaved: "Saved {mb} MB ({format}).",
    exportFailed: "Export failed: {detail}",
  },
  nl: {
    hide: "Verberg", show: "Toon", metric: "Meetwaarde", period: "Periode",
    colourScale: "Kleurschaal", scaleBands: "Luchtkwaliteitsklassen", scaleContinuous: "Doorlopend, over het bereik in beeld",
    continuousTitle: "{metric} ({unit}), doorlopende schaal: laagste tot hoogste cel in beeld",
    continuousNote: "Niet de luchtkwaliteitsklassen: de kleuren vergelijken alleen de cellen in dit beeld en deze periode met elkaar.",
    continuousShared: "Beide kaarten (A en B) gebruiken dit ene bereik, van de laagste tot de hoogste cel van beide perioden: een kleur is op beide dezelfde waarde.",
    diffLabel: "als één kaart van het verschil (A − B)",
    diffTitle: "{metric} ({unit}): periode A min periode B, per cel",
    diffNote: "{n} cellen met genoeg metingen in beide periodes; rood: hoger in A, blauw: lager.",
    compare: "Vergelijk met", compareNone: "—", comparePrevious: "de periode ervoor",
    compareWeek: "een week eerder", compareYear: "een jaar eerder", compareDay: "één dag…",
    last1: "Afgelopen uur", last6: "Afgelopen 6 uur", last24: "Afgelopen 24 uur", last168: "Afgelopen 7 dagen",
    last720: "Afgelopen 30 dagen", oneDay: "Eén dag…", fromTo: "Van … tot …", from: "Van", to: "Tot",
    lastHours: "afgelopen {hours} uur",
    periodInvalid: "Het einde moet na het begin liggen.",
    apiKey: "API-sleutel", useKey: "Gebruik sleutel", noKey: "Geen sleutel (openbaar)",
    rolePublic: "rol: openbaar (geen sleutel)", role: "rol: {role}", checking: "controleren…",
    keyRefusedShort: "sleutel geweigerd",
    fleetHealth: "Vlootstatus", exportView: "Exporteer metingen in beeld",
    exportTitle: "ruwe metingen in het kaartbeeld en de periode",
    downloadCsv: "Download CSV", close: "sluiten", language: "Taal",
    keyRefused: "De API-sleutel is geweigerd ({detail}): mogelijk verkeerd getypt of ingetrokken.",
    enterAnotherKey: "Andere sleutel invoeren", continueWithoutKey: "Verder zonder sleutel",
    serverAway: "De bikesense-server is niet bereikbaar: de kaart toont niets nieuws tot hij antwoordt. Opnieuw proberen…",
    databaseAway: "De database is niet beschikbaar: de kaart kan nu geen gegevens tonen (dit is niet \"geen gegevens\"). Opnieuw proberen…",
    serverAnswered: "De server antwoordde {status}: {detail}",
    tilesFailed: "Sommige kaarttegels zijn niet geladen; de kaart kan onvolledig zijn.",
    periodEmpty: "De periode is leeg: het einde moet na het begin liggen.",
    noPublicData: "Geen openbare {metric}-gegevens in beeld voor deze periode (een cel verschijnt zodra er {k} ritten doorheen zijn gegaan). Kies een langere periode, een andere dag, of zoom uit.",
    noData: "Geen {metric}-gegevens in beeld voor deze periode. Kies een langere periode, een andere dag, of zoom uit.",
    withheldAll: "Gegevens achtergehouden voor privacy: {metric} is in of rond dit beeld in deze periode gemeten, maar door minder dan {k} ritten per straatblok en uur, dus niets ervan is openbaar. Dit is niet \u201cgeen gegevens\u201d.",
    withheldSome: "Sommige gegevens achtergehouden voor privacy: in of rond dit beeld wordt {metric} die door minder dan {k} ritten per straatblok en uur is gemeten niet getoond.",
    failedToStart: "De kaart kon niet starten: {detail}",
    liveOn: "live-updates: aan", liveLast: "live-updates: aan, laatste {time}",
    liveServerAway: "live-updates: uit (server onbereikbaar)",
    liveStalled: "live-updates: gestokt (database niet beschikbaar)",
    liveConnecting: "live-updates: verbinden", liveReconnecting: "live-updates: opnieuw verbinden",
    liveClosed: "live-updates: gesloten",
    notShown: "geen gegevens, te weinig gegevens, of minder dan {k} ritten (niet openbaar): niet getoond",
    valuesCorrected: "Gecorrigeerde waarden: de metingen van elke kit gecorrigeerd met officiële referentiestations; niet volledig gecorrigeerde cellen worden niet getoond (#values=raw voor ruwe metingen)",
    valuesRaw: "Ruwe metingen, zoals de kits ze maten (niet gecorrigeerd met referentiestations)",
    whoLine: "WHO-advieswaarde 2021: {annual} µg/m³ jaargemiddelde, {day} µg/m³ daggemiddelde",
    source: "Bron: {source}",
    loading: "Laden…", perBucket: "{metric} ({unit}), per {bucket}",
    near: "bij {street} · ", cellAt: "cel {cell} (resolutie {res})",
    chartNoteNoise: "Lijn: LAeq (energetisch gemiddelde); band: het 95 %-interval ervan (ritten als eenheid); open punten: te weinig metingen. Wijs aan voor waarden.",
    chartNote: "Lijn: gemiddelde; band: 95 %-interval (ritten als eenheid); open punten: te weinig metingen; gekleurde lijnen: klassengrenzen. Wijs aan voor waarden.",
    cellFailed: "Deze cel kon niet worden geladen",
    cellNoPublicData: "Geen openbare gegevens voor deze cel in de periode (minder ritten dan de privacydrempel, of geen).",
    cellNoData: "Geen gegevens voor deze cel in de periode.",
    axisTime: "lokale tijd ({tz})", seriesTime: "tijd", seriesMean: "gemiddelde", seriesLaeq: "LAeq",
    seriesFew: "te weinig metingen", seriesLow: "95 % onder", seriesHigh: "95 % boven",
    noInterval: "geen interval: {reason}", noInterval_single_ride: "geen interval: één rit",
    noInterval_no_spread: "geen interval: minder dan twee metingen", noInterval_zero_mean: "geen interval: gemiddelde nul",
    whoChart: "WHO-daggemiddelde {value}",
    fleetFailed: "De vloot kon niet worden geladen: {detail}",
    fleetSummary: "{n} kits sinds {since}: {silent} langer dan een uur stil, {low} onder {pct} % batterij, {rejected} frames geweigerd{unknown}.",
    fleetUnknown: ", nog {n} van onbekende kits",
    fleetColumns: ["kit", "status", "laatst gezien", "batterij", "firmware", "metingen (24 uur)", "geweigerd"],
    never: "nooit", justNow: "zojuist", minAgo: "{n} min geleden", hoursAgo: "{n} uur geleden", daysAgo: "{n} dagen geleden",
    exporting: "Exporteren…", exportingMb: "Exporteren… {mb} MB", exportSaved: "{mb} MB opgeslagen ({format}).",
    exportFailed: "Export mislukt: {detail}",
    metric_noise: "Geluid", metric_temperature: "Temperatuur", metric_humidity: "Luchtvochtigheid",
    // What the API sends in English: the EAQI band names and the note on mobile readings.
    band_Good: "Goed", band_Fair: "Redelijk", band_Moderate: "Matig", band_Poor: "Slecht",
    "band_Very poor": "Zeer slecht", "band_Extremely poor": "Extreem slecht",
    indicativeNote: "Mobiele metingen van goedkope sensoren op fietsen, gemiddeld over korte vensters: indicatief, geen officiële metingen (vergelijk met meetstations).",
  },
};

export const LANGUAGES = ["en", "nl"];

export function chooseLanguage(hashLang) {
  if (LANGUAGES.includes(hashLang)) return hashLang;
  const saved = localStorage.getItem("bikesense-lang");
  if (LANGUAGES.includes(saved)) return saved;
  for (const tag of navigator.languages || [navigator.language]) {
    const base = String(tag).slice(0, 2).toLowerCase();
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

let current = "en";

export function setLanguage(lang) {
  current = LANGUAGES.includes(lang) ? lang : "en";
  document.documentElement.lang = current;
  localStorage.setItem("bikesense-lang", current);
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
}

export function language() {
  return current;
}

// A message, or null where Dutch has none and English has none either (API texts).
export function maybe(key) {
  const m = MESSAGES[current][key] ?? MESSAGES.en[key];
  return m === undefined ? null : m;
}

export function t(key, vars = {}) {
  const m = maybe(key);
  if (m === null) return key;
  if (typeof m !== "string") return m;
  return m.replace(/\{(\w+)\}/g, (_, name) => (vars[name] === undefined ? `{${name}}` : String(vars[name])));
}
