"""What each role may see: every privacy decision of the API, in one place.

Mail carriers are people at work and a bike's track is personal data
(docs/privacy.md). The API's part of that rule:

* the public sees only windows of at least ``public_min_window_s`` (an hour),
  and only what is merged from public units (:func:`public_units`: cell-windows
  of the finest resolution and the finest public window) holding at least
  k = ``public_min_rides`` distinct rides that measured the metric; a unit
  below k is left out of every figure at every resolution, window and range
  (absent, never zero), and a cell whose remaining units have rides on fewer
  than ``public_min_days`` days is absent too (:func:`selection`; the
  database applies it);
* keyed roles (officer, researcher, admin) see every window size and every
  cell-window (k = 1);
* raw readings are for researchers and admins (:func:`check_raw_access`);
  researchers get kits and rides by daily pseudonyms only and may not ask for
  a kit by its real id (:func:`export_identities`); admins get them as stored;
* fleet health is for officers and admins (:func:`check_fleet_access`);
* live events for the public carry no cell list (``api.live.LiveEvent.public``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from api.config import ApiSettings
from api.errors import BadParameterError, ForbiddenError, UnauthorizedError
from api.roles import Principal, Role
from bikesense.settings import Settings
from storage.selection import Selection
from stream.core.partials import Metric


def allowed_windows(principal: Principal, settings: Settings, api: ApiSettings) -> tuple[int, ...]:
    """The stored window sizes this caller may see."""
    sizes = settings.window_sizes_s
    if principal.role.is_public:
        sizes = tuple(w for w in sizes if w >= api.public_min_window_s)
    return sizes or (max(settings.window_sizes_s),)


def public_units(settings: Settings, api: ApiSettings) -> tuple[int, int]:
    """The public's finest grain: the finest stored resolution and the finest window
    the public may see. k is applied to these cell-windows only, and every public figure
    is merged from the ones that pass (closed under differencing, docs/privacy.md)."""
    return max(settings.h3_resolutions), min(allowed_windows(Principal(Role.PUBLIC), settings, api))


def selection(
    principal: Principal,
    api: ApiSettings,
    *,
    settings: Settings,
    metric: Metric,
    resolution: int,
    window_s: int,
    start: datetime,
    end: datetime,
) -> Selection:
    """What storage reads for this caller: the public's k-anonymity thresholds on the
    public units, or none."""
    if not principal.role.is_public:
        return Selection(
            metric=metric, resolution=resolution, window_s=window_s, start=start, end=end
        )
    unit_res, unit_window_s = public_units(settings, api)
    return Selection(
        metric=metric,
        resolution=resolution,
        window_s=window_s,
        start=start,
        end=end,
        min_rides=api.public_min_rides,
        min_days=api.public_min_days,
        unit_resolution=unit_res,
        unit_window_s=unit_window_s,
    )


def check_bucket(principal: Principal, api: ApiSettings, bucket_s: int) -> None:
    """Time-series buckets finer than the public's finest window need a key."""
    if principal.role.is_public and bucket_s < api.public_min_window_s:
        raise ForbiddenError(
            f"the public may see buckets of at least {api.public_min_window_s} s; "
            "an API key of an officer unlocks finer ones",
            parameter="bucket",
        )


def check_raw_access(principal: Principal) -> None:
    role = principal.role
    if role.is_public:
        raise UnauthorizedError(
            "raw readings need an API key of a researcher or admin",
            parameter="X-API-Key",
            location="header",
        )
    if not role.may_export_raw:
        raise ForbiddenError(
            f"the {role.value} role may not export raw readings",
            parameter="X-API-Key",
            location="header",
        )


def check_fleet_access(principal: Principal) -> None:
    role = principal.role
    if role.is_public:
        raise UnauthorizedError(
            "fleet health needs an API key of an officer or admin",
            parameter="X-API-Key",
            location="header",
        )
    if not role.may_see_fleet:
        raise ForbiddenError(
            f"the {role.value} role may not see fleet health",
            parameter="X-API-Key",
            location="header",
        )


class Identities(StrEnum):
    """How an export names kits and rides."""

    PSEUDONYMS = "pseudonyms"  # daily pseudonyms, nothing that links a kit's days
    STORED = "stored"  # the ids as stored


def export_identities(principal: Principal, *, by_kit_id: bool, by_pseudonym: bool) -> Identities:
    """The identities an export of raw readings shows this (raw-reading) caller, and
    whether it may filter kits the way it asks to."""
    if principal.role is not Role.ADMIN:
        if by_kit_id:
            # Asking by real id and reading back the pseudonyms would undo them.
            raise ForbiddenError(
                "researchers name kits by their daily pseudonym: use kit_pseudonym", parameter="kit"
            )
        return Identities.PSEUDONYMS
    if by_pseudonym:
        raise BadParameterError(
            "admins filter by kit id (`bikesense kits pseudonym` maps a day's pseudonyms to kits)",
            parameter="kit_pseudonym",
        )
    return Identities.STORED
