"""The operator's settings: one tree, read from the environment (``BIKESENSE_*``) at the edge.

    Settings
    ├── services     where PostgreSQL, Mosquitto and Kafka are (unset: the embedded ones)
    ├── kafka        the distributed runtime's name and partitions
    ├── aggregation  H3 resolutions and window sizes
    ├── privacy      zones, trims, local days, the public's thresholds, raw retention
    ├── api          what only the HTTP API decides: limits, caching, the map page
    └── secrets      keys and passwords, as secret types that never print

Each section reads its own variables, whose names are the operator's interface
(docs/deployment.md lists them); each default is written once, here or in
:mod:`bikesense.defaults` for those the pure core shares. Nothing imports a
settings singleton: the CLIs and the API call :func:`load_settings` once and pass
the tree (or the part a component needs) down. Tests build theirs with
``load_settings(field=value, ...)``, naming a field of any section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bikesense import defaults
from bikesense.exceptions import ConfigurationError
from bikesense.servicestate import running_url

_SECTION = SettingsConfigDict(
    env_prefix="BIKESENSE_", extra="ignore", frozen=True, populate_by_name=True
)


class ServiceSettings(BaseSettings):
    """Where the services are. Unset URLs mean "use the embedded services"."""

    model_config = _SECTION

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB URL, e.g. postgresql://user@host:5432/bikesense",
    )
    mqtt_url: str | None = Field(
        default=None, description="MQTT broker URL: mqtt://host:1883 or mqtts://host:8883"
    )
    kafka_url: str | None = Field(
        default=None,
        description="Kafka bootstrap URL for the distributed runtime: kafka://host:9092",
    )
    state_dir: Path = Field(
        default=Path(".state"),
        description="where `bikesense services up` keeps its clusters, logs and URLs",
    )
    pg_bindir: Path | None = Field(
        default=None,
        description="PostgreSQL server binaries for the embedded services "
        "(default: the newest /usr/lib/postgresql/*/bin)",
    )
    kafka_cache_dir: Path | None = Field(
        default=None,
        description="where Kafka's jars are kept once Maven resolved them "
        "(default: under the state folder)",
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres"}:
            msg = f"must start with postgresql:// (got scheme {scheme!r})"
            raise ValueError(msg)
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            msg = f"must look like mqtt://host:1883 or mqtts://host:8883 (got {value!r})"
            raise ValueError(msg)
        return value

    @field_validator("kafka_url")
    @classmethod
    def _check_kafka_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "kafka" or not parts.hostname:
            msg = f"must look like kafka://host:9092 (got {value!r})"
            raise ValueError(msg)
        return value


class KafkaSettings(BaseSettings):
    """The distributed runtime's identity in Kafka (``BIKESENSE_KAFKA_*``)."""

    model_config = SettingsConfigDict(**{**_SECTION, "env_prefix": "BIKESENSE_KAFKA_"})

    app_id: str = Field(
        default="bikesense",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the distributed runtime's name in Kafka: its topics ({id}.readings, "
        "{id}.enriched), consumer group and table changelog; the same for "
        "ingest and every worker of one deployment",
    )
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="partitions of the distributed runtime's topics: the most workers that "
        "share the work; the same for ingest and every worker, fixed once data flows",
    )


class AggregationSettings(BaseSettings):
    """Which cells and windows the stream aggregates."""

    model_config = _SECTION

    h3_resolutions: tuple[int, ...] = defaults.H3_RESOLUTIONS
    window_sizes_s: tuple[int, ...] = defaults.WINDOW_SIZES_S

    @field_validator("h3_resolutions")
    @classmethod
    def _check_resolutions(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 <= r <= 15 for r in value):
            msg = f"H3 resolutions must be between 0 and 15 (got {value!r})"
            raise ValueError(msg)
        return tuple(sorted(set(value)))

    @field_validator("window_sizes_s")
    @classmethod
    def _check_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w <= 0 or 86400 % w != 0 for w in value):
            msg = f"window sizes must be positive divisors of a day in seconds (got {value!r})"
            raise ValueError(msg)
        return tuple(sorted(set(value)))


class PrivacySettings(BaseSettings):
    """Rider privacy (docs/privacy.md): what is never stored, what the public may see,
    how long raw tracks are kept. :class:`bikesense.policy.PrivacyPolicy` is built from it."""

    model_config = _SECTION

    zones_file: Path | None = Field(
        default=None,
        validation_alias="BIKESENSE_PRIVACY_ZONES_FILE",
        description="GeoJSON (or JSON list) of privacy zones: readings inside are never stored",
    )
    trim_start_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        validation_alias="BIKESENSE_PRIVACY_TRIM_START_S",
        description="readings of the first seconds of every ride are never stored "
        "(off by default; docs/privacy.md recommends 120 with zones)",
    )
    trim_end_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        validation_alias="BIKESENSE_PRIVACY_TRIM_END_S",
        description="readings of the last seconds of every ride are never stored; "
        "readings wait this long before they show (off by default; "
        "docs/privacy.md recommends 120 with zones)",
    )
    day_tz: str = Field(
        default=defaults.DAY_TZ,
        description="IANA time zone of the fleet's local days: the day a ride belongs to, "
        "the days of the public k-anonymity threshold and the days of "
        "researchers' pseudonyms",
    )
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
    raw_retention_days: int = Field(
        default=90,
        ge=1,
        description="raw readings older than this are dropped; aggregates stay",
    )

    @field_validator("day_tz")
    @classmethod
    def _check_day_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r}: use an IANA name such as 'Europe/Amsterdam'"
            raise ValueError(msg) from None
        return value


class ApiSettings(BaseSettings):
    """What only the HTTP API decides (its privacy thresholds are in :class:`PrivacySettings`)."""

    model_config = _SECTION

    host: str = Field(default="127.0.0.1", validation_alias="BIKESENSE_API_HOST")
    port: int = Field(default=8000, ge=0, le=65535, validation_alias="BIKESENSE_API_PORT")
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


class SecretSettings(BaseSettings):
    """Keys and passwords: each as its text (a secret type: never in a repr or a log) or
    as a file holding it (``<VAR>_FILE``, for secret stores); unset, the embedded
    services keep generated ones in the state folder (storage/keyfiles.py)."""

    model_config = _SECTION

    kit_master_key: SecretStr | None = Field(
        default=None, description="derives every kit's HMAC secret (docs/protocol.md)"
    )
    kit_master_key_file: Path | None = None
    pseudonym_key: SecretStr | None = Field(
        default=None, description="names kits and rides in researchers' exports (docs/privacy.md)"
    )
    pseudonym_key_file: Path | None = None
    mqtt_ingest_password: SecretStr | None = Field(
        default=None, description="ingest's broker password (default: the state folder's)"
    )

    @staticmethod
    def text(secret: SecretStr | None) -> str | None:
        """The secret's text, or None when unset or empty."""
        return secret.get_secret_value() or None if secret is not None else None


class Settings(BaseModel):
    """The whole tree. ``Settings()`` reads every section from the environment."""

    model_config = ConfigDict(frozen=True)

    SECTIONS: ClassVar[dict[str, type[BaseSettings]]] = {
        "services": ServiceSettings,
        "kafka": KafkaSettings,
        "aggregation": AggregationSettings,
        "privacy": PrivacySettings,
        "api": ApiSettings,
        "secrets": SecretSettings,
    }

    services: ServiceSettings = Field(default_factory=ServiceSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    aggregation: AggregationSettings = Field(default_factory=AggregationSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)


def _section_of(field: str) -> str:
    for section, cls in Settings.SECTIONS.items():
        if field in cls.model_fields:
            return section
    msg = f"no setting is named {field!r}"
    raise ConfigurationError(msg)


def _variable(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else ""
    if name.upper().startswith("BIKESENSE_"):
        return name.upper()
    info = cls.model_fields.get(name)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    prefix = str(cls.model_config.get("env_prefix", "BIKESENSE_"))
    return f"{prefix}{'_'.join(str(p) for p in loc)}".upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the environment into the tree; ``overrides`` name fields of any section
    (``load_settings(database_url=url, public_min_rides=1)``) and win over it.
    A bad value becomes one :class:`ConfigurationError` naming each variable."""
    by_section: dict[str, dict[str, Any]] = {name: {} for name in Settings.SECTIONS}
    for field, value in overrides.items():
        by_section[_section_of(field)][field] = value
    sections: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name, cls in Settings.SECTIONS.items():
        try:
            sections[name] = cls(**by_section[name])
        except ValidationError as exc:
            problems += [f"{_variable(cls, err['loc'])}: {err['msg']}" for err in exc.errors()]
    if problems:
        raise ConfigurationError(f"invalid configuration: {'; '.join(problems)}")
    return Settings(**sections)


def _recorded_url(settings: Settings, service: str) -> str | None:
    return running_url(settings.services.state_dir, service)


def resolve_database_url(settings: Settings) -> str:
    """``BIKESENSE_DATABASE_URL``, else the cluster ``bikesense services up`` started."""
    url = settings.services.database_url or _recorded_url(settings, "postgres")
    if url is None:
        raise ConfigurationError(
            "no database: set BIKESENSE_DATABASE_URL, or run `bikesense services up` "
            f"(state folder {settings.services.state_dir.resolve()})"
        )
    return url


def resolve_mqtt_url(settings: Settings) -> str:
    """``BIKESENSE_MQTT_URL``, else the broker ``bikesense services up`` started."""
    url = settings.services.mqtt_url or _recorded_url(settings, "mosquitto")
    if url is None:
        raise ConfigurationError(
            "no MQTT broker: set BIKESENSE_MQTT_URL, or run `bikesense services up` "
            f"(state folder {settings.services.state_dir.resolve()})"
        )
    return url


def resolve_kafka_url(settings: Settings) -> str:
    """``BIKESENSE_KAFKA_URL``, else the broker ``bikesense services up --kafka`` started."""
    url = settings.services.kafka_url or _recorded_url(settings, "kafka")
    if url is None:
        raise ConfigurationError(
            "no Kafka broker: set BIKESENSE_KAFKA_URL=kafka://host:9092, or run "
            "`bikesense services up --kafka` "
            f"(state folder {settings.services.state_dir.resolve()}); "
            "the embedded runtime, `bikesense ingest`, needs none"
        )
    return url


def variables() -> dict[str, str]:
    """Every environment variable the tree reads, with the setting it fills
    (``section.field``); a secret's ``<VAR>_FILE`` twin is a field of its own."""
    found = {}
    for section, cls in Settings.SECTIONS.items():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            variable = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
            found[variable] = f"{section}.{name}"
    return found
