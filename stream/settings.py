"""The stream core's configuration, built from the operator's settings at the edge."""

from __future__ import annotations

from bikesense.settings import Settings
from stream.core.process import CoreConfig


def core_config(settings: Settings) -> CoreConfig:
    return CoreConfig(resolutions=settings.h3_resolutions,
                      window_sizes_s=settings.window_sizes_s)
