"""The map page in headless Chromium, as an officer uses it.

It loads, draws tiles over the offline base map's streets, switches metric; a refused key
leaves a way out; a database that is down, an empty period and "last hour" are said as what
they are; the phone layout folds its panel; days are picked in local time; the cell chart has
labelled axes, hover values, the role's finest bucket, a CSV download, and follows the period.
Screenshots go to test-artifacts/ (look at them). No timed assertions: every wait is for a
state the page reports in ``window.bikesense``.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import psycopg
import pytest
from PIL import Image

from api.keys import create_key, revoke_key
from api.roles import Role
from bikesense.services import free_port
from simulators.streetmap import write_town_streets
from simulators.town import TownSpec, generate_town
from tests.api.api_factories import BUSY, NOW, NOW_MS, QUIET, ride, write
from tests.api.api_server import ServerThread
from tests.api.conftest import app_at
from tests.conftest import cloned_database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: Every tile the map asked for is in, and the map stands still: what a screenshot shows
#: is what the API drew, not tiles of the metric before (MapLibre keeps those until then).
TILES_LOADED = "() => window.bikesense.map.loaded() && !window.bikesense.map.isMoving()"
READY = "() => window.bikesense && window.bikesense.ready && window.bikesense.tileLoads > 0"
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
BACKGROUND = "#eef0ea"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium package"),
]


def _recent_rides() -> list[np.ndarray]:
    """Rides in the hour before NOW, so the page's default period (the last 24 h) shows them:
    the page's clock is set to NOW below, and so is the API's (conftest.py)."""
    t0 = NOW_MS - NOW_MS % 3_600_000 - 3_600_000  # start of the previous hour
    busy = [
        ride(
            kit_id=k,
            ride_id=500 + k,
            start=BUSY,
            n=120,
            t0_ms=t0 + k * 300_000,
            seed=k,
            noise_db=60.0 + 20 * (k % 2),
        )
        for k in range(1, 5)
    ]
    quiet = [
        ride(
            kit_id=k,
            ride_id=600 + k,
            start=QUIET,
            n=120,
            t0_ms=t0 + k * 300_000,
            pm25=30.0,
            seed=k,
            boot_id=2,
        )
        for k in range(5, 9)
    ]
    return busy + quiet


#: 2026-11-20: three rides through BUSY, each alone in its hour. No unit reaches k = 3,
#: the district's day holds three rides: the public is told data was withheld.
WITHHELD_DAY_MS = NOW_MS - NOW_MS % 86_400_000 - 3 * 86_400_000


def _withheld_rides() -> list[np.ndarray]:
    return [
        ride(
            kit_id=k,
            ride_id=700 + k,
            start=BUSY,
            n=60,
            t0_ms=WITHHELD_DAY_MS + (8 + 2 * k) * 3_600_000,
            seed=k,
            boot_id=3,
        )
        for k in range(1, 4)
    ]


def _api(**overrides: Any) -> dict[str, Any]:
    """The map page opened on the scenario's streets."""
    return {
        "map_center_lat": (BUSY[0] + QUIET[0]) / 2,
        "map_center_lon": (BUSY[1] + QUIET[1]) / 2,
        "map_zoom": 14.0,
        **overrides,
    }


@pytest.fixture(scope="module")
def site(
    postgres_url: str, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The API with the rides above, the demo town's streets as its base map, and keys."""
    # The demo's town is centred where BUSY is (Alphen aan den Rijn): the same streets.
    town = generate_town(TownSpec(), np.random.default_rng(1))
    basemap = write_town_streets(town, tmp_path_factory.mktemp("basemap") / "streets.geojson")
    with cloned_database(postgres_url, migrated_template) as url:
        write(url, _recent_rides() + _withheld_rides())
        with psycopg.connect(url, autocommit=True) as conn:
            officer = create_key(conn, Role.OFFICER, label="browser officer").token
            researcher = create_key(conn, Role.RESEARCHER, label="browser researcher").token
            revoked = create_key(conn, Role.OFFICER, label="browser revoked")
            revoke_key(conn, revoked.key_id)
        with ServerThread(app_at(url, **_api(basemap_file=basemap))) as server:
            yield {
                "url": server.url,
                "officer": officer,
                "researcher": researcher,
                "revoked": revoked.token,
            }


def _browser_environment() -> dict[str, str | float | bool]:
    """This process's environment without preloaded libraries. The page's clock is the
    test's, so the browser's own clock plays no part; and Chromium's zygote cannot fork
    with the libfaketime that `./run test-ahead` preloads into everything else."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=_browser_environment()
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A fresh browser context at a viewport, its clock at ``now``, with what it asked for."""

    def __init__(
        self,
        browser: Any,
        viewport: dict[str, int],
        now: Any = NOW,
        key: str | None = None,
        locale: str = "en-GB",
        offline: bool = True,
    ) -> None:
        self.context = browser.new_context(viewport=viewport, accept_downloads=True, locale=locale)
        self.page = self.context.new_page()
        # The page's Date says `now`: its default period is the 24 hours before it.
        self.page.clock.set_fixed_time(now)
        # No internet in tests: the raster base map must never be what the test sees. (A
        # routed page has no HTTP cache: `offline=False` where the test needs the cache and
        # the base map file keeps the page from asking for the raster.)
        if offline:
            self.page.route("https://tile.openstreetmap.org/**", lambda route: route.abort())
        if key is not None:
            self.page.add_init_script(f"sessionStorage.setItem('bikesense-key', {key!r})")
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.statuses: list[tuple[str, int]] = []
        self.page.on("response", lambda r: self.statuses.append((r.url, r.status)))
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def tiles(self, since: int = 0) -> list[str]:
        return [u for u in self.requests[since:] if "/v1/tiles/" in u]

    def series(self, since: int = 0) -> list[dict[str, list[str]]]:
        return [parse_qs(urlparse(u).query) for u in self.requests[since:] if "/v1/timeseries" in u]

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def wait(self, expression: str) -> None:
        self.page.wait_for_function(expression, timeout=90_000)

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        return path

    def click_at(self, lat: float, lon: float) -> None:
        box = self.page.locator("#map").bounding_box()
        assert box is not None
        x, y = self.js(
            f"(() => {{ const p = window.bikesense.map.project([{lon}, {lat}]);"
            " return [p.x, p.y]; })()"
        )
        self.page.mouse.click(box["x"] + x, box["y"] + y)

    def close(self) -> None:
        assert self.errors == []
        self.context.close()


def _tiles_answered(url: str, status: str) -> float:
    """How many tile requests the API answered with ``status``, from its /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bikesense_api_requests_total{")
        and "/v1/tiles/" in line
        and f'status="{status}"' in line
    )


def _blend(hex_colour: str, alpha: int = 190, background: str = BACKGROUND) -> np.ndarray:
    fg = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    bg = np.array([int(background[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    a = alpha / 255
    return a * fg + (1 - a) * bg


def _pixels_like(
    path: Path, hex_colour: str, tolerance: float = 14.0, background: str = BACKGROUND
) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    distance = np.abs(rgb - _blend(hex_colour, background=background)).max(axis=2)
    return int((distance <= tolerance).sum())


def test_the_map_draws_tiles_over_streets_and_switches_metric(
    site: dict[str, str], browser: Any
) -> None:
    p = Page(browser, DESKTOP, offline=False)
    p.page.goto(site["url"])
    p.wait(READY)
    p.wait(TILES_LOADED)
    # The offline base map: the town's streets, drawn, and named (no tile server, no internet).
    assert p.js("window.bikesense.basemap") == "offline"
    p.wait("() => window.bikesense.map.queryRenderedFeatures({layers: ['streets']}).length > 50")
    p.wait(
        "() => window.bikesense.map.queryRenderedFeatures({layers: ['street-labels']}).length > 5"
    )
    first = p.shot("map-pm25.png")
    assert any("/v1/tiles/pm25/" in url for url in p.tiles())
    assert p.js("window.bikesense.tileErrors") == 0
    # PM2.5 ≈ 8 µg/m³ at BUSY is "Fair", ≈ 30 at QUIET "Moderate" (EAQI 2024 bands), over
    # the background or over a street.
    assert (
        _pixels_like(first, "#50CCAA") + _pixels_like(first, "#50CCAA", background="#ffffff") > 30
    )
    assert (
        _pixels_like(first, "#F0E641") + _pixels_like(first, "#F0E641", background="#ffffff") > 30
    )
    assert "Fair" in p.page.inner_text("#legend")
    assert "indicative" in p.page.inner_text("#note")
    assert p.js("window.bikesense.problem") is None
    assert p.js("window.bikesense.live") == "on"

    # Live events redraw the tiles only when they touch the view, and an unchanged tile
    # costs a 304 (its URL stays the same; the page revalidates it with its ETag).
    p.js(
        "window.bikesense.handleLive('aggregates', {metrics: ['pm25'], resolutions: [7, 8, 9, 10],"
        f" windows: [[3600, {NOW_MS - 7 * 86_400_000}]]}})"
    )
    p.js(
        "window.bikesense.handleLive('aggregates', {metrics: ['noise'], resolutions: [10],"
        f" windows: [[3600, {NOW_MS - 3_600_000}]]}})"
    )
    assert p.js("window.bikesense.liveRefreshes") is None
    tiles_before = set(p.tiles())
    seen = len(p.requests)
    not_modified = _tiles_answered(site["url"], "304")
    p.js(
        "window.bikesense.handleLive('aggregates', {metrics: ['pm25'], resolutions: [7, 8, 9, 10],"
        f" windows: [[3600, {NOW_MS - 3_600_000}]]}})"
    )
    p.wait("() => window.bikesense.liveRefreshes === 1")
    p.wait(TILES_LOADED)
    again = p.tiles(seen)
    assert again
    assert set(again) <= tiles_before
    # The browser hands the page its cached copy (Chromium reports 200), the API said 304.
    assert _tiles_answered(site["url"], "304") - not_modified >= len(again)

    before = len(p.requests)
    p.page.select_option("#metric", "noise")
    p.wait("() => document.querySelector('#legend').innerText.includes('dB(A)')")
    p.wait(TILES_LOADED)
    assert any("/v1/tiles/noise/" in url for url in p.tiles(before))
    second = p.shot("map-noise.png")
    # BUSY: two rides at 60 dB and two at 80 dB → LAeq ≈ 77 dB, the "≥ 75" band.
    assert (
        _pixels_like(second, "#4B1B5E") + _pixels_like(second, "#4B1B5E", background="#ffffff") > 30
    )
    # The view is shareable: the URL carries the metric, the period and the position.
    assert "metric=noise" in p.page.url
    assert "last=24" in p.page.url
    assert "at=" in p.page.url
    p.close()


def test_the_cell_panel_charts_downloads_and_follows_the_period(
    site: dict[str, str], browser: Any
) -> None:
    p = Page(browser, DESKTOP)
    p.page.goto(site["url"])
    p.wait(READY)
    p.click_at(*BUSY)
    p.wait("() => window.bikesense.plot && window.bikesense.highlighted")
    # The clicked cell is outlined on the map, and named by its street.
    assert p.js("window.bikesense.highlighted") == p.js("window.bikesense.lastSeries.cell")
    p.wait("() => window.bikesense.map.queryRenderedFeatures({layers: ['selected']}).length > 0")
    assert "near " in p.page.inner_text("#chart-where")
    # Labelled axes with the unit and local time; the public's finest bucket is an hour.
    labels = p.js("window.bikesense.plot.axes.map((a) => a.label)")
    assert labels == ["local time (Europe/Amsterdam)", "PM2.5 (µg/m³)"]
    assert p.series()[-1]["bucket"] == ["1h"]
    # Hovering a point shows its value and its local time in the legend.
    over = p.page.locator("#chart .u-over").bounding_box()
    assert over is not None
    x = p.js(
        "(() => { const u = window.bikesense.plot; const i = u.data[1].findIndex("
        "(v) => v !== null); return u.valToPos(u.data[0][i], 'x'); })()"
    )
    p.page.mouse.move(over["x"] + x, over["y"] + over["height"] / 2)
    p.wait(
        "() => [...document.querySelectorAll('#chart .u-legend .u-value')]"
        ".some((e) => e.textContent.includes('µg/m³'))"
    )
    p.shot("map-cell-chart.png")

    with p.page.expect_download() as download:
        p.page.click("#chart-download")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("start,n_readings,rides,mean")

    # A new period redraws the chart for it: one day, picked in local time.
    before = len(p.requests)
    p.page.select_option("#range", "day")
    p.page.fill("#day", "2026-11-23")
    p.page.dispatch_event("#day", "change")
    p.wait("() => window.bikesense.lastSeries.time_from.startsWith('2026-11-22T23')")
    series = p.series(before)
    # Europe/Amsterdam is UTC+1 in November: the local day starts at 23:00 UTC the day before.
    assert series[-1]["from"] == ["2026-11-22T23:00:00.000Z"]
    assert series[-1]["to"] == ["2026-11-23T23:00:00.000Z"]
    assert "UTC 2026-11-22 23:00 – 2026-11-23 23:00" in p.page.inner_text("#period-utc")
    assert "day=2026-11-23" in p.page.url
    assert any("from=2026-11-22T23" in url for url in p.tiles(before))
    p.close()


def test_two_periods_side_by_side(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP)
    p.page.goto(site["url"])
    p.wait(READY)
    before = len(p.requests)
    p.page.select_option("#compare", "week")
    p.wait("() => window.bikesense.mapBReady === true")
    p.wait("() => window.bikesense.mapB.loaded() && !window.bikesense.mapB.isMoving()")
    # Period B is the same 24 hours a week earlier, drawn beside A over the same streets.
    b_tiles = [parse_qs(urlparse(u).query) for u in p.tiles(before)]
    assert any(
        q["from"] == ["2026-11-15T12:00:00.000Z"] and q["to"] == ["2026-11-16T12:00:00.000Z"]
        for q in b_tiles
    )
    assert "B · Sun 15 Nov 2026 13:00" in p.page.inner_text("#label-b")
    assert "compare=week" in p.page.url
    # The two maps move together.
    p.js("window.bikesense.map.jumpTo({center: [4.66, 52.13], zoom: 15})")
    centre = p.js("window.bikesense.mapB.getCenter().toArray()")
    assert centre == pytest.approx([4.66, 52.13], abs=1e-6)
    assert p.js("window.bikesense.mapB.getZoom()") == pytest.approx(15)
    p.wait("() => window.bikesense.map.loaded() && window.bikesense.mapB.loaded()")
    p.shot("map-compare.png")
    p.page.select_option("#compare", "none")
    p.wait("() => window.bikesense.mapB === null")
    p.close()


def test_the_noise_chart_draws_its_interval_and_says_when_there_is_none(
    site: dict[str, str], browser: Any
) -> None:
    # An officer's quarter hours: rides 1-2 and 3-4 of BUSY, each with LAeq's interval. The
    # first point is made a single ride's (as the API says it: no bounds, and why), to see
    # the page say so on hover.
    def one_ride(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        first = next(pt for pt in body["points"] if pt["laeq_db"] is not None)
        first.update(ci95_low=None, ci95_high=None, interval_reason="single_ride")
        route.fulfill(response=response, json=body)

    p = Page(browser, DESKTOP, key=site["officer"])
    p.page.route("**/v1/timeseries?*", one_ride)
    p.page.goto(site["url"] + "#metric=noise&from=2026-11-23T12:00&to=2026-11-23T13:00")
    p.wait(READY)
    p.click_at(*BUSY)
    p.wait("() => window.bikesense.plot && window.bikesense.lastSeries")
    assert p.series()[-1]["bucket"] == ["15m"]
    # The band is drawn for noise: LAeq's interval where a point has one.
    assert p.js("window.bikesense.plot.bands.length") == 1
    shown = p.js("window.bikesense.plot.series.slice(3).map((s) => s.show)")
    assert shown == [True, True]
    lows = p.js("window.bikesense.plot.data[3]")
    laeq = p.js(
        "window.bikesense.plot.data[1].map((v, i) => v ?? window.bikesense.plot.data[2][i])"
    )
    with_value = [i for i, v in enumerate(laeq) if v is not None]
    assert len(with_value) >= 2
    assert lows[with_value[0]] is None
    assert any(lows[i] is not None for i in with_value[1:])
    assert "95 % interval" in p.page.inner_text("#chart-note")
    # Hovering the single ride's point says why it has no interval.
    over = p.page.locator("#chart .u-over").bounding_box()
    assert over is not None
    x = p.js(f"window.bikesense.plot.valToPos(window.bikesense.plot.data[0][{with_value[0]}], 'x')")
    p.page.mouse.move(over["x"] + x, over["y"] + over["height"] / 2)
    p.wait(
        "() => [...document.querySelectorAll('#chart .u-legend .u-value')]"
        ".some((e) => e.textContent === 'no interval: one ride')"
    )
    p.shot("map-noise-chart.png")
    p.close()


def test_the_continuous_scale_on_both_maps_side_by_side(site: dict[str, str], browser: Any) -> None:
    # A: 12:15-12:30 local, rides 3 and 4; B, the quarter before: rides 1 and 2.
    p = Page(browser, DESKTOP, key=site["officer"])
    p.page.goto(
        site["url"] + "#from=2026-11-23T12:15&to=2026-11-23T12:30&compare=previous&scale=continuous"
    )
    p.wait(READY)
    p.wait("() => window.bikesense.mapBReady === true && window.bikesense.scaleShared === true")
    assert p.js("window.bikesense.continuousCellsB") > 0
    p.wait("() => window.bikesense.mapB.queryRenderedFeatures({layers: ['continuous']}).length > 0")
    assert p.js("window.bikesense.mapB.getLayoutProperty('heat', 'visibility')") == "none"
    # One range over both periods: both maps' layers use the same colour stops.
    stops = "window.bikesense.{}.getPaintProperty('continuous', 'fill-color')"
    assert p.js(stops.format("map")) == p.js(stops.format("mapB"))
    low, high = p.js("window.bikesense.scaleRange")
    assert low < high
    legend = p.page.inner_text("#legend")
    assert "continuous scale" in legend
    assert "Both maps (A and B) use this one range" in legend
    p.wait("() => window.bikesense.map.loaded() && window.bikesense.mapB.loaded()")
    p.shot("map-compare-continuous.png")
    # Back to the bands: both maps show the tiles again.
    p.page.select_option("#scale", "bands")
    p.wait("() => window.bikesense.mapB.getLayoutProperty('heat', 'visibility') === 'visible'")
    assert p.js("window.bikesense.map.getLayoutProperty('heat', 'visibility')") == "visible"
    p.close()


def test_a_continuous_scale_over_the_view(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP)
    p.page.goto(site["url"])
    p.wait(READY)
    p.page.select_option("#scale", "continuous")
    p.wait("() => Array.isArray(window.bikesense.scaleRange)")
    low, high = p.js("window.bikesense.scaleRange")
    # BUSY ≈ 8 µg/m³, QUIET ≈ 30: the scale runs between the cells in view, not the bands.
    assert 6 < low < 10
    assert 27 < high < 33
    p.wait("() => window.bikesense.map.queryRenderedFeatures({layers: ['continuous']}).length >= 2")
    assert p.js("window.bikesense.map.getLayoutProperty('heat', 'visibility')") == "none"
    legend = p.page.inner_text("#legend")
    assert "continuous scale" in legend
    assert "Not the air-quality bands" in legend
    assert "scale=continuous" in p.page.url
    p.wait(TILES_LOADED)
    p.shot("map-continuous.png")
    p.page.select_option("#scale", "bands")
    p.wait("() => window.bikesense.map.getLayoutProperty('heat', 'visibility') === 'visible'")
    assert "Fair" in p.page.inner_text("#legend")
    p.close()


def test_the_difference_of_two_periods(site: dict[str, str], browser: Any) -> None:
    # A: 12:15–12:30 local (11:15–11:30 UTC), rides 3 and 4 of each place; B, the quarter
    # before: rides 1 and 2. An officer sees quarter-hour windows of any number of rides.
    p = Page(browser, DESKTOP, key=site["officer"])
    p.page.goto(site["url"] + "#from=2026-11-23T12:15&to=2026-11-23T12:30&compare=previous&diff=1")
    p.wait(READY)
    p.wait("() => window.bikesense.diffCells > 0")
    assert p.page.is_hidden("#map-b")
    assert "A − B" in p.page.inner_text("#label-a")
    assert "minus period B" in p.page.inner_text("#legend")
    p.wait("() => window.bikesense.map.queryRenderedFeatures({layers: ['continuous']}).length > 0")
    p.wait(TILES_LOADED)
    p.shot("map-difference.png")
    # Side by side again: the second map comes back, the tiles too.
    p.page.uncheck("#diff")
    p.wait("() => window.bikesense.mapBReady === true")
    p.wait("() => window.bikesense.map.getLayoutProperty('heat', 'visibility') === 'visible'")
    p.close()


def test_an_empty_period_says_so(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP)
    p.page.goto(site["url"] + "#day=2026-11-10")
    p.wait(READY)
    p.wait("() => window.bikesense.problem === 'empty'")
    assert "No public PM2.5 data" in p.page.inner_text("#banner")
    assert p.js("window.bikesense.withheld") is False
    p.shot("map-empty-period.png")
    # Back to a period with data: the message goes.
    p.page.select_option("#range", "24")
    p.wait("() => window.bikesense.problem === null && window.bikesense.cellsInView > 0")
    p.close()


def test_data_withheld_for_privacy_is_not_no_data(site: dict[str, str], browser: Any) -> None:
    # 2026-11-20: three rides, one an hour, through BUSY: nothing public, but withheld.
    p = Page(browser, DESKTOP)
    p.page.goto(site["url"] + "#day=2026-11-20")
    p.wait(READY)
    p.wait("() => window.bikesense.problem === 'empty' && window.bikesense.withheld === true")
    assert p.js("window.bikesense.cellsInView") == 0
    text = p.page.inner_text("#banner")
    assert "Data withheld for privacy" in text
    assert "fewer than 3 rides" in text
    assert "No public PM2.5 data" not in text
    p.shot("map-withheld.png")
    # Another day without rides is "no data" again.
    p.page.fill("#day", "2026-11-10")
    p.page.dispatch_event("#day", "change")
    p.wait("() => window.bikesense.withheld === false && window.bikesense.problem === 'empty'")
    assert "No public PM2.5 data" in p.page.inner_text("#banner")
    p.close()
    # An officer sees that day's cells: nothing is withheld from a key.
    p = Page(browser, DESKTOP, key=site["officer"])
    p.page.goto(site["url"] + "#day=2026-11-20")
    p.wait(READY)
    p.wait("() => window.bikesense.cellsInView > 0 && window.bikesense.withheld === false")
    assert p.js("window.bikesense.problem") is None
    p.close()


def test_last_hour_is_the_last_sixty_minutes(site: dict[str, str], browser: Any) -> None:
    # Ten minutes into the next hour: the clock hour (12:00–13:00) holds nothing yet, the
    # last 60 minutes (11:10–12:10) hold the rides of 11:05–11:27.
    p = Page(browser, DESKTOP, now=NOW + timedelta(minutes=10))
    p.page.goto(site["url"] + "#last=1")
    p.wait(READY)
    assert "UTC 2026-11-23 11:10 – 2026-11-23 12:10" in p.page.inner_text("#period-utc")
    p.wait("() => window.bikesense.cellsInView > 0")
    assert p.js("window.bikesense.problem") is None
    p.close()


def test_a_refused_key_leaves_a_way_out(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP, key=site["revoked"])
    p.page.goto(site["url"])
    p.wait("() => window.bikesense.problem === 'key'")
    assert "refused" in p.page.inner_text("#banner")
    p.shot("map-revoked-key.png")
    # The key form works after a failed start: a good key starts the map, with its role.
    p.page.fill("#key", site["officer"])
    p.page.click("#key-apply")
    p.wait(READY)
    assert p.js("window.bikesense.problem") is None
    assert "officer" in p.page.inner_text("#role")
    # Officers get their finest bucket in the chart: 15 minutes.
    p.click_at(*BUSY)
    p.wait("() => window.bikesense.plot !== null")
    assert p.series()[-1]["bucket"] == ["15m"]
    # ... and the fleet's health, which the public does not.
    assert p.page.is_hidden("#export")
    p.page.click("#fleet-open")
    p.wait("() => window.bikesense.fleetKits !== undefined")
    assert "kits since" in p.page.inner_text("#fleet-summary")
    p.shot("map-fleet.png")
    p.page.click("#fleet-close")
    # A wrong key after a good start is refused too, and "without a key" brings the public map.
    p.page.fill("#key", "bsk_wrong")
    p.page.click("#key-apply")
    p.wait("() => window.bikesense.problem === 'key'")
    p.page.get_by_role("button", name="Continue without a key").click()
    p.wait(
        "() => window.bikesense.problem === null && window.bikesense.state.meta.role === 'public'"
    )
    assert p.page.is_hidden("#fleet-open")
    p.close()


def test_a_researcher_exports_the_view(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP, key=site["researcher"])
    p.page.goto(site["url"])
    p.wait(READY)
    assert p.page.is_hidden("#fleet-open")
    with p.page.expect_download() as download:
        p.page.click("#export")
    p.wait("() => window.bikesense.exports === 1")
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    # The readings of the view's area and period: every ride of the scenario is in view.
    assert len(lines) > 100
    url = [u for u in p.requests if "/v1/exports/readings" in u][-1]
    query = parse_qs(urlparse(url).query)
    assert query["format"] == ["csv"]
    assert query["from"] == ["2026-11-22T12:00:00.000Z"]
    assert len(query["bbox"][0].split(",")) == 4
    p.close()


def test_the_phone_layout_folds_the_panel(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, PHONE)
    # A shared link opens where it points: here the busy cell, so the phone shows it.
    p.page.goto(site["url"] + f"#at={BUSY[0]},{BUSY[1]},15")
    p.wait(READY)
    p.wait(TILES_LOADED)
    # Folded to one line at first: the map gets the screen.
    panel = p.page.locator("#panel").bounding_box()
    assert panel is not None
    assert panel["height"] < 0.1 * PHONE["height"]
    assert not p.page.is_visible("#legend")
    p.shot("map-phone.png")
    p.page.click("#panel-toggle")
    assert p.page.is_visible("#legend")
    p.shot("map-phone-panel.png")
    p.page.click("#panel-toggle")
    assert not p.page.is_visible("#legend")
    p.click_at(*BUSY)
    p.wait("() => window.bikesense.plot !== null")
    chart = p.page.locator("#chart-panel").bounding_box()
    assert chart is not None
    assert chart["width"] <= PHONE["width"]
    p.shot("map-phone-chart.png")
    p.close()


def test_a_database_that_is_down_is_not_no_data(browser: Any) -> None:
    # Nothing listens on this port: the API starts, and every data request fails.
    dead = f"postgresql://bikesense@127.0.0.1:{free_port()}/nothing"
    app = app_at(dead, **_api(database_timeout_s=1.0))
    with ServerThread(app) as server:
        p = Page(browser, DESKTOP)
        p.page.goto(server.url)
        p.wait("() => window.bikesense.problem === 'database'")
        assert "database is unavailable" in p.page.inner_text("#banner")
        # The live dot does not claim live updates while nothing can arrive.
        p.wait("() => window.bikesense.live !== 'on' && window.bikesense.live !== undefined")
        assert "live updates: on" not in p.page.inner_text("#live-text")
        p.shot("map-database-down.png")
        p.close()


def test_a_dutch_browser_gets_dutch_with_a_switch(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP, locale="nl-NL")
    p.page.goto(site["url"])
    p.wait(READY)
    assert p.js("document.documentElement.lang") == "nl"
    assert p.page.inner_text("label[for=metric]") == "Meetwaarde"
    assert "Redelijk (5–15)" in p.page.inner_text("#legend")
    assert "indicatief" in p.page.inner_text("#note")
    # Dates in Dutch, in local time: zondag 22 nov (abbreviated).
    assert "nov" in p.page.inner_text("#period-local")
    p.click_at(*BUSY)
    p.wait("() => window.bikesense.plot !== null")
    assert p.js("window.bikesense.plot.axes[0].label") == "lokale tijd (Europe/Amsterdam)"
    p.shot("map-nl.png")
    p.page.select_option("#lang", "en")
    p.wait("() => document.documentElement.lang === 'en'")
    assert p.page.inner_text("label[for=metric]") == "Metric"
    assert "Fair (5–15)" in p.page.inner_text("#legend")
    p.wait(
        "() => window.bikesense.plot && window.bikesense.plot.axes[0].label"
        " === 'local time (Europe/Amsterdam)'"
    )
    assert "lang=en" in p.page.url
    p.close()


def test_the_api_docs_work_offline(site: dict[str, str], browser: Any) -> None:
    p = Page(browser, DESKTOP)
    # Nothing but the API answers: no CDN.
    p.page.route(lambda url: not url.startswith(site["url"]), lambda route: route.abort())
    p.page.goto(site["url"] + "/docs")
    p.page.wait_for_selector(".swagger-ui .opblock", timeout=90_000)
    assert "/v1/basemap" in p.page.inner_text(".swagger-ui")
    p.shot("api-docs.png")
    p.close()
