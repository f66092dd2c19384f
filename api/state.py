"""What one running API instance holds: built in the lifespan, torn down after."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from api.bands import BandSet
from api.database import HealthProbe
from api.export_slots import ExportSlots
from api.live import Broadcaster
from api.metrics import ApiMetrics
from api.pseudonym_key import PseudonymKeys
from api.ratelimit import TokenBuckets
from bikesense.policy import PrivacyPolicy
from bikesense.settings import Settings


@dataclass
class ApiState:
    settings: Settings
    policy: PrivacyPolicy
    bands: BandSet
    metrics: ApiMetrics
    limiter: TokenBuckets
    broadcaster: Broadcaster
    export_slots: ExportSlots
    pool: AsyncConnectionPool | None = None
    health: HealthProbe | None = None
    database_url: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pseudonym_keys: PseudonymKeys = field(init=False)

    def __post_init__(self) -> None:
        self.pseudonym_keys = PseudonymKeys(self.settings.secrets, self.settings.services.state_dir)
