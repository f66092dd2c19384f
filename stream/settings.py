"""The stream core's configuration, built from the operator's settings at the edge."""

from __future__ import annotations

from bikesense.policy import PrivacyPolicy
from bikesense.settings import Settings
from stream.core.process import CoreConfig


def core_config(settings: Settings, policy: PrivacyPolicy | None = None) -> CoreConfig:
    """The core's configuration; its privacy part is ``policy``'s (built from ``settings``
    when not given: the zones file is read then)."""
    policy = policy or PrivacyPolicy.from_settings(settings)
    return CoreConfig(
        resolutions=settings.aggregation.h3_resolutions,
        window_sizes_s=settings.aggregation.window_sizes_s,
        day_tz=policy.day_tz,
        privacy=policy.core(),
    )
