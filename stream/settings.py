"""The stream core's configuration, built from the operator's settings at the edge."""

from __future__ import annotations

from bikesense.exceptions import ConfigurationError
from bikesense.settings import Settings
from stream.core.exceptions import InvalidConfigError
from stream.core.privacy import PrivacyConfig, Zone, zones_from_text
from stream.core.process import CoreConfig


def core_config(settings: Settings) -> CoreConfig:
    return CoreConfig(
        resolutions=settings.h3_resolutions,
        window_sizes_s=settings.window_sizes_s,
        day_tz=settings.day_tz,
        privacy=PrivacyConfig(
            zones=privacy_zones(settings),
            trim_start_s=settings.privacy_trim_start_s,
            trim_end_s=settings.privacy_trim_end_s,
        ),
    )


def privacy_zones(settings: Settings) -> tuple[Zone, ...]:
    """The zones of ``BIKESENSE_PRIVACY_ZONES_FILE``; none when it is not set."""
    path = settings.privacy_zones_file
    if path is None:
        return ()
    try:
        return zones_from_text(path.read_text(), source=str(path))
    except OSError as exc:
        msg = f"BIKESENSE_PRIVACY_ZONES_FILE: cannot read {path} ({exc})"
        raise ConfigurationError(msg) from exc
    except InvalidConfigError as exc:
        msg = f"BIKESENSE_PRIVACY_ZONES_FILE: {exc}"
        raise ConfigurationError(msg) from exc
