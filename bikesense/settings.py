"""Configuration, read from the environment (``BIKESENSE_*``) at the edge only.

Nothing imports a settings singleton: the CLI and the API build a
:class:`Settings` with :func:`load_settings` and pass values down. Tests build
their own with keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bikesense import defaults
from bikesense.exceptions import ConfigurationError
from bikesense.servicestate import running_url

#: The domain's defaults, written once in bikesense.defaults (the core uses them too).
DEFAULT_H3_RESOLUTIONS = defaults.H3_RESOLUTIONS
DEFAULT_WINDOW_SIZES_S = defaults.WINDOW_SIZES_S


class Settings(BaseSettings):
    """Everything an operator can set. Unset URLs mean "use the embedded services"."""

    model_config = SettingsConfigDict(env_prefix="BIKESENSE_", extra="ignore", frozen=True)

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
    kafka_app_id: str = Field(
        default="bikesense",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the distributed runtime's name in Kafka: its topics ({id}.readings, "
        "{id}.enriched), consumer group and table changelog; the same for "
        "ingest and every worker of one deployment",
    )
    kafka_partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="partitions of the distributed runtime's topics: the most workers that "
        "share the work; the same for ingest and every worker, fixed once data flows",
    )
    state_dir: Path = Field(
        default=Path(".state"),
        description="Where `bikesense services up` keeps its clusters, logs and URLs",
    )
    h3_resolutions: tuple[int, ...] = DEFAULT_H3_RESOLUTIONS
    window_sizes_s: tuple[int, ...] = DEFAULT_WINDOW_SIZES_S
    # Rider privacy (docs/design.md decision 4, docs/privacy.md).
    privacy_zones_file: Path | None = Field(
        default=None,
        description="GeoJSON (or JSON list) of privacy zones: readings inside are never stored",
    )
    privacy_trim_start_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="readings of the first seconds of every ride are never stored "
        "(off by default; docs/privacy.md recommends 120 with zones)",
    )
    privacy_trim_end_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
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
    raw_retention_days: int = Field(
        default=90,
        ge=1,
        description="raw readings older than this are dropped; aggregates stay",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)

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

    @field_validator("h3_resolutions")
    @classmethod
    def _check_resolutions(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 0 <= r <= 15 for r in value):
            msg = f"H3 resolutions must be between 0 and 15 (got {value!r})"
            raise ValueError(msg)
        return tuple(sorted(set(value)))

    @field_validator("day_tz")
    @classmethod
    def _check_day_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r}: use an IANA name such as 'Europe/Amsterdam'"
            raise ValueError(msg) from None
        return value

    @field_validator("window_sizes_s")
    @classmethod
    def _check_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w <= 0 or 86400 % w != 0 for w in value):
            msg = f"window sizes must be positive divisors of a day in seconds (got {value!r})"
            raise ValueError(msg)
        return tuple(sorted(set(value)))


def load_settings(**overrides: object) -> Settings:
    """Read the environment, turning pydantic's report into one actionable error."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"BIKESENSE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc


def _recorded_url(settings: Settings, service: str) -> str | None:
    return running_url(settings.state_dir, service)


def resolve_database_url(settings: Settings) -> str:
    """``BIKESENSE_DATABASE_URL``, else the cluster ``bikesense services up`` started."""
    url = settings.database_url or _recorded_url(settings, "postgres")
    if url is None:
        raise ConfigurationError(
            "no database: set BIKESENSE_DATABASE_URL, or run `bikesense services up` "
            f"(state folder {settings.state_dir.resolve()})"
        )
    return url


def resolve_mqtt_url(settings: Settings) -> str:
    """``BIKESENSE_MQTT_URL``, else the broker ``bikesense services up`` started."""
    url = settings.mqtt_url or _recorded_url(settings, "mosquitto")
    if url is None:
        raise ConfigurationError(
            "no MQTT broker: set BIKESENSE_MQTT_URL, or run `bikesense services up` "
            f"(state folder {settings.state_dir.resolve()})"
        )
    return url


def resolve_kafka_url(settings: Settings) -> str:
    """``BIKESENSE_KAFKA_URL``, else the broker ``bikesense services up --kafka`` started."""
    url = settings.kafka_url or _recorded_url(settings, "kafka")
    if url is None:
        raise ConfigurationError(
            "no Kafka broker: set BIKESENSE_KAFKA_URL=kafka://host:9092, or run "
            f"`bikesense services up --kafka` (state folder {settings.state_dir.resolve()}); "
            "the embedded runtime, `bikesense ingest`, needs none"
        )
    return url
