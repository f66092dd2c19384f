"""What each role may see, as HTTP: the rules of :class:`bikesense.policy.PrivacyPolicy`
(built once from the settings, held by the app's state), and the errors a refusal is.

* the public sees only windows of at least the policy's minimum public window, and
  only what is merged from public units (the policy's ``public_units``) holding at
  least k rides that measured the metric, on enough days; a unit below k is left out
  of every figure at every resolution, window and range (absent, never zero)
  (:func:`selection`; the database applies it);
* keyed roles (officer, researcher, admin) see every window size and every
  cell-window (k = 1);
* raw readings are for the policy's raw roles (:func:`check_raw_access`); of those,
  only the roles that see stored identities get kits and rides as stored, the others
  daily pseudonyms, and may not ask for a kit by its real id (:func:`export_identities`);
* fleet health is for the policy's fleet roles (:func:`check_fleet_access`);
* live events carry a cell list only where the policy says so
  (``api.live.LiveEvent.public``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from api.errors import BadParameterError, ForbiddenError, UnauthorizedError
from api.roles import Principal, Role
from bikesense.policy import PrivacyPolicy
from storage.selection import Selection
from stream.core.partials import Metric


def allowed_windows(principal: Principal, policy: PrivacyPolicy) -> tuple[int, ...]:
    """The stored window sizes this caller may see."""
    return policy.allowed_windows(principal.role.value)


def selection(
    principal: Principal,
    policy: PrivacyPolicy,
    *,
    metric: Metric,
    resolution: int,
    window_s: int,
    start: datetime,
    end: datetime,
    corrected: bool = False,
) -> Selection:
    """What storage reads for this caller: the public's k-anonymity thresholds on the
    public units, or none; the same for corrected values as for raw ones."""
    limits = policy.thresholds(principal.role.value)
    return Selection(
        metric=metric,
        resolution=resolution,
        window_s=window_s,
        start=start,
        end=end,
        min_rides=limits.min_rides,
        min_days=limits.min_days,
        unit_resolution=limits.unit_resolution,
        unit_window_s=limits.unit_window_s,
        corrected=corrected,
    )


def check_bucket(principal: Principal, policy: PrivacyPolicy, bucket_s: int) -> None:
    """Time-series buckets finer than the public's finest window need a key."""
    if not policy.bucket_allowed(principal.role.value, bucket_s):
        raise ForbiddenError(
            f"the public may see buckets of at least {policy.public_min_window_s} s; "
            "an API key of an officer unlocks finer ones",
            parameter="bucket",
        )


def _roles(roles: frozenset[str]) -> str:
    names = [r.value for r in Role if r.value in roles]
    return " or ".join(", ".join(names).rsplit(", ", 1))


def check_raw_access(principal: Principal, policy: PrivacyPolicy) -> None:
    role = principal.role
    if role.is_public:
        raise UnauthorizedError(
            f"raw readings need an API key of a {_roles(policy.raw_roles)}",
            parameter="X-API-Key",
            location="header",
        )
    if not policy.may_export_raw(role.value):
        raise ForbiddenError(
            f"the {role.value} role may not export raw readings",
            parameter="X-API-Key",
            location="header",
        )


def check_fleet_access(principal: Principal, policy: PrivacyPolicy) -> None:
    role = principal.role
    if role.is_public:
        raise UnauthorizedError(
            f"fleet health needs an API key of an {_roles(policy.fleet_roles)}",
            parameter="X-API-Key",
            location="header",
        )
    if not policy.may_see_fleet(role.value):
        raise ForbiddenError(
            f"the {role.value} role may not see fleet health",
            parameter="X-API-Key",
            location="header",
        )


class Identities(StrEnum):
    """How an export names kits and rides."""

    PSEUDONYMS = "pseudonyms"  # daily pseudonyms, nothing that links a kit's days
    STORED = "stored"  # the ids as stored


def export_identities(
    principal: Principal, policy: PrivacyPolicy, *, by_kit_id: bool, by_pseudonym: bool
) -> Identities:
    """The identities an export of raw readings shows this (raw-reading) caller, and
    whether it may filter kits the way it asks to."""
    if not policy.shows_stored_identities(principal.role.value):
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
