"""The map page in headless Chromium: it loads, asks for tiles, draws them, switches metric."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.config import ApiSettings
from tests.api.api_factories import BUSY, NOW, NOW_MS, QUIET, ride, write
from tests.api.api_server import ServerThread
from tests.api.conftest import TEST_API, app_at

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: Every tile the map asked for is in, and the map stands still: what a screenshot shows
#: is what the API drew, not tiles of the metric before (MapLibre keeps those until then).
TILES_LOADED = "() => window.bikesense.map.loaded() && !window.bikesense.map.isMoving()"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium package"),
]


def _recent_rides() -> list[np.ndarray]:
    """Rides in the hour before NOW, so the page's default period (the last 24 h) shows them:
    the page's clock is set to NOW below, and so is the API's (conftest.py)."""
    t0 = NOW_MS - NOW_MS % 3_600_000 - 3_600_000  # start of the previous hour
    busy = [ride(kit_id=k, ride_id=500 + k, start=BUSY, n=120, t0_ms=t0 + k * 300_000, seed=k,
                 noise_db=60.0 + 20 * (k % 2)) for k in range(1, 5)]
    quiet = [ride(kit_id=k, ride_id=600 + k, start=QUIET, n=120, t0_ms=t0 + k * 300_000,
                  pm25=30.0, seed=k, boot_id=2) for k in range(5, 9)]
    return busy + quiet


@pytest.fixture
def page_url(migrated_database_url: str) -> Iterator[str]:
    write(migrated_database_url, _recent_rides())
    api = ApiSettings(**TEST_API, map_center_lat=(BUSY[0] + QUIET[0]) / 2,
                      map_center_lon=(BUSY[1] + QUIET[1]) / 2, map_zoom=14.0)
    with ServerThread(app_at(migrated_database_url, api)) as server:
        yield server.url


def _browser_environment() -> dict[str, str]:
    """This process's environment without preloaded libraries. The page's clock is the
    test's, so the browser's own clock plays no part; and Chromium's zygote cannot fork
    with the libfaketime that `./run test-ahead` preloads into everything else."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def _blend(hex_colour: str, alpha: int = 190, background: str = "#e9edf0") -> np.ndarray:
    fg = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    bg = np.array([int(background[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    a = alpha / 255
    return a * fg + (1 - a) * bg


def _pixels_like(path: Path, hex_colour: str, tolerance: float = 14.0) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    distance = np.abs(rgb - _blend(hex_colour)).max(axis=2)
    return int((distance <= tolerance).sum())


def test_the_map_page_draws_tiles_and_switches_metric(page_url: str) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    ARTIFACTS.mkdir(exist_ok=True)
    tile_requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     env=_browser_environment())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # The page's Date says NOW: its default period is the 24 hours before it.
            page.clock.set_fixed_time(NOW)
            # No internet in tests: the base map must fall back to the plain background.
            page.route("https://tile.openstreetmap.org/**", lambda route: route.abort())
            page.on("request", lambda r: tile_requests.append(r.url) if "/v1/tiles/" in r.url
                    else None)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            page.wait_for_function("window.bikesense && window.bikesense.ready "
                                   "&& window.bikesense.tileLoads > 0",
                                   timeout=30_000)
            page.wait_for_function(TILES_LOADED, timeout=30_000)
            first = ARTIFACTS / "map-pm25.png"
            page.screenshot(path=str(first))
            assert any("/v1/tiles/pm25/" in url for url in tile_requests)
            assert page.evaluate("window.bikesense.tileErrors") == 0
            # PM2.5 ≈ 8 µg/m³ at BUSY is "Fair", ≈ 30 at QUIET "Moderate" (EAQI 2024 bands).
            assert _pixels_like(first, "#50CCAA") > 30
            assert _pixels_like(first, "#F0E641") > 30
            legend = page.inner_text("#legend")
            assert "Fair" in legend
            assert "indicative" in page.inner_text("#note")

            before = len(tile_requests)
            page.select_option("#metric", "noise")
            page.wait_for_function("() => document.querySelector('#legend').innerText"
                                   ".includes('dB(A)')")
            # The switch asked for new tiles at once (the change handler is synchronous).
            page.wait_for_function(TILES_LOADED, timeout=30_000)
            assert any("/v1/tiles/noise/" in url for url in tile_requests[before:])
            second = ARTIFACTS / "map-noise.png"
            page.screenshot(path=str(second))
            # BUSY: two rides at 60 dB and two at 80 dB → LAeq ≈ 77 dB, the "≥ 75" band.
            assert _pixels_like(second, "#4B1B5E") > 30
            assert _pixels_like(second, "#50CCAA") == 0

            # A click on a cell shows its time series.
            box = page.locator("#map").bounding_box()
            assert box is not None
            centre = page.evaluate(
                f"(() => {{ const p = window.bikesense.map.project([{BUSY[1]}, {BUSY[0]}]);"
                " return [p.x, p.y]; })()")
            page.mouse.click(box["x"] + centre[0], box["y"] + centre[1])
            page.wait_for_selector("#chart svg", timeout=15_000)
            assert "noise" in page.inner_text("#chart-title")
            page.screenshot(path=str(ARTIFACTS / "map.png"))
            assert errors == []
        finally:
            browser.close()
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
