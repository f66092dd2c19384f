"""Settings of the HTTP API, read from ``BIKESENSE_*`` at the edge only.

The shared :class:`bikesense.settings.Settings` carries what every stage needs
(database URL, H3 resolutions, window sizes, host and port); this adds what only
the API decides: the privacy thresholds of docs/design.md decision 4, rate limits,
caching and CORS. Tests build :class:`ApiSettings` with keyword arguments and
hand it to :func:`api.app.create_app`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bikesense.exceptions import ConfigurationError


class ApiSettings(BaseSettings):
    """What an operator can tune in the API."""

    model_config = SettingsConfigDict(env_prefix="BIKESENSE_", extra="ignore", frozen=True)

    # Privacy (docs/design.md decision 4): what the anonymous public may see.
    public_min_rides: int = Field(
        default=3,
        ge=1,
        description="k: a cell-window is public only with at least this many distinct rides",
    )
    public_min_days: int = Field(
        default=1,
        ge=1,
        description="a cell-window is public only with rides on at least this many distinct days",
    )
    public_min_window_s: int = Field(
        default=3600,
        ge=60,
        description="the finest window (seconds) the public may see; officers see any window",
    )
    # Statistics: below this many readings a cell is "insufficient", drawn transparent.
    min_readings: int = Field(
        default=10,
        ge=1,
        description="cells with fewer readings are marked insufficient, never coloured",
    )
    # Rate limit of the public role: a token bucket per client address.
    public_rate_per_s: float = Field(default=20.0, gt=0, description="sustained requests/s")
    public_burst: int = Field(default=200, ge=1, description="bucket size (requests)")
    rate_limit_clients: int = Field(
        default=10_000,
        ge=1,
        description="client buckets kept; the least recently seen go first",
    )
    # Caching of tiles: how long a tile of a range still open may be reused.
    tile_max_age_s: int = Field(default=60, ge=0)
    tile_closed_max_age_s: int = Field(
        default=3600,
        ge=0,
        description="max-age of tiles whose range ended more than a day ago "
        "(late data can still arrive, so not immutable)",
    )
    cors_origins: tuple[str, ...] = ()
    band_version: str = Field(default="eaqi-2024", description="colour band set, see api/data")
    basemap_url: str = Field(
        default="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="raster base map template; the page falls back to a plain background "
        "when it cannot load; empty to never try",
    )
    basemap_file: Path | None = Field(
        default=None,
        description="GeoJSON of streets and places drawn under the heat map, offline "
        "(docs/map.md); served at /v1/basemap; when set, the raster is not tried",
    )
    map_center_lat: float = Field(
        default=52.129,
        ge=-85,
        le=85,
        description="where the map page opens (default: Alphen a/d Rijn)",
    )
    map_center_lon: float = Field(default=4.656, ge=-180, le=180)
    map_zoom: float = Field(default=13.0, ge=0, le=22)
    live_queue_size: int = Field(default=64, ge=1, description="SSE events buffered per client")
    live_heartbeat_s: float = Field(default=15.0, gt=0)
    export_batch_rows: int = Field(default=50_000, ge=100, description="rows per streamed chunk")
    database_timeout_s: float = Field(
        default=10.0, gt=0, description="wait this long for a database connection, then 503"
    )
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=8, ge=1)
    # Bounds on the database sessions, so that slow queries and slow clients cannot hold
    # the pool's connections (api/database.py says how each applies).
    statement_timeout_s: float = Field(
        default=60.0, gt=0, description="a query of the API running longer is cancelled (503)"
    )
    idle_in_transaction_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="PostgreSQL ends an API session idle this long inside a transaction "
        "(an export whose client stopped reading)",
    )
    # Exports run on slots of their own (api/export_slots.py), so that slow downloads
    # cannot take every pooled connection from tiles and cells. An export holds up to
    # two connections (storage.exports.EXPORT_CONNECTIONS): 2 exports hold at most 4 of
    # the default pool's 8, leaving the other half to the map's requests.
    export_concurrency: int = Field(
        default=2,
        ge=1,
        description="exports running at once; one more is refused with 503 and Retry-After",
    )
    # 1 per key: one researcher's second download would otherwise take the other slot
    # and lock every other key out of exports until both end.
    export_per_key: int = Field(
        default=1,
        ge=1,
        description="exports one API key may run at once; one more is refused with 429",
    )
    send_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="an export whose client takes no data for this long is aborted",
    )


def load_api_settings(**overrides: object) -> ApiSettings:
    """Read the environment, turning pydantic's report into one actionable error."""
    try:
        return ApiSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"BIKESENSE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid API configuration: {problems}") from exc
