"""The map page's JavaScript packages, served from ``api/web/node_modules`` (``npm ci``).

Each is pinned in ``api/web/package.json`` and its lock file and served under
``/static/<name>/``: the page fetches nothing from a CDN, so it works offline.
"""

from __future__ import annotations

from pathlib import Path

NODE_MODULES = Path(__file__).resolve().parent / "web" / "node_modules"

#: URL name → the package's folder of browser builds.
PACKAGES = {
    "maplibre": "maplibre-gl/dist",  # the map
    "uplot": "uplot/dist",  # the cell chart
    "luxon": "luxon/build/es6",  # local time (Europe/Amsterdam) ↔ UTC
    "h3": "h3-js/dist",  # the outline of the clicked cell
    "swagger-ui": "swagger-ui-dist",  # /docs (api/routes/apidocs.py)
}


#: The page's own ES modules besides app.js (served as /static/page/<file>).
PAGE_MODULES = Path(__file__).resolve().parent / "web" / "modules"


def asset_dirs() -> tuple[dict[str, Path], list[Path]]:
    """(URL name → folder) of the packages installed and the page's modules, and the
    folders missing."""
    found: dict[str, Path] = {"page": PAGE_MODULES}
    missing: list[Path] = []
    for name, sub in PACKAGES.items():
        folder = NODE_MODULES / sub
        if folder.is_dir():
            found[name] = folder
        else:
            missing.append(folder)
    return found, missing
