"""The privacy policy: every rule of docs/privacy.md, built once from the settings.

Mail carriers are people at work and a bike's track is personal data. One
:class:`PrivacyPolicy` holds what follows from that, and every part of bikesense
that applies a rule takes it from here:

* the stream (both runtimes) withholds readings in privacy zones and at the
  ends of rides (:meth:`PrivacyPolicy.core`, applied by ``stream.core.privacy``);
* raw tracks are kept ``raw_retention_days`` (maintenance, ``bikesense db drop-expired``);
* the API (``api.privacy`` turns a refusal into an HTTP error) shows the public
  only windows of at least ``public_min_window_s``, merged from the public
  units (:meth:`public_units`) that hold at least ``public_min_rides`` rides
  that measured the metric, on ``public_min_days`` days; keyed roles see every
  cell-window (:meth:`thresholds`);
* raw readings go to :attr:`raw_roles` only; of those, :attr:`stored_identity_roles`
  get kits and rides as stored, the others daily pseudonyms of the local days of
  ``day_tz``, and the columns of :attr:`withheld_from_pseudonymous` never
  (:meth:`shows_stored_identities`);
* fleet health goes to :attr:`fleet_roles`; the public's live events carry no
  cell list (:meth:`live_cells`).

Roles are named by their value (``"public"``, ``"officer"``, ``"researcher"``,
``"admin"``: ``api.roles.Role``), so the policy sits below the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from bikesense.exceptions import ConfigurationError
from bikesense.settings import Settings
from storage.export_columns import WITHHELD_COLUMNS
from stream.core.exceptions import InvalidConfigError
from stream.core.privacy import PrivacyConfig, Zone, zones_from_text

PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What a cell-window needs before a caller may see it; 0: no threshold."""

    min_rides: int = 0
    min_days: int = 0
    #: The grain k is applied at (finest public resolution and window); None: no k.
    unit_resolution: int | None = None
    unit_window_s: int | None = None


@dataclass(frozen=True, slots=True)
class PrivacyPolicy:
    zones: tuple[Zone, ...]
    trim_start_s: float
    trim_end_s: float
    day_tz: str
    public_min_rides: int
    public_min_days: int
    public_min_window_s: int
    raw_retention_days: int
    h3_resolutions: tuple[int, ...]
    window_sizes_s: tuple[int, ...]
    raw_roles: frozenset[str] = frozenset({"researcher", "admin"})
    stored_identity_roles: frozenset[str] = frozenset({"admin"})
    fleet_roles: frozenset[str] = frozenset({"officer", "admin"})
    #: Export columns only :attr:`stored_identity_roles` get: they link a kit's days
    #: (storage refuses them in a pseudonymous export whatever asks).
    withheld_from_pseudonymous: frozenset[str] = WITHHELD_COLUMNS

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyPolicy:
        """The policy of ``settings``; the zones file is read here, once."""
        privacy = settings.privacy
        return cls(
            zones=_zones(settings),
            trim_start_s=privacy.trim_start_s,
            trim_end_s=privacy.trim_end_s,
            day_tz=privacy.day_tz,
            public_min_rides=privacy.public_min_rides,
            public_min_days=privacy.public_min_days,
            public_min_window_s=privacy.public_min_window_s,
            raw_retention_days=privacy.raw_retention_days,
            h3_resolutions=settings.aggregation.h3_resolutions,
            window_sizes_s=settings.aggregation.window_sizes_s,
        )

    # -- the stream --------------------------------------------------------------------

    def core(self) -> PrivacyConfig:
        """What the stream core withholds before anything is stored."""
        return PrivacyConfig(
            zones=self.zones, trim_start_s=self.trim_start_s, trim_end_s=self.trim_end_s
        )

    # -- aggregates ----------------------------------------------------------------------

    def allowed_windows(self, role: str) -> tuple[int, ...]:
        """The stored window sizes ``role`` may see."""
        sizes = self.window_sizes_s
        if role == PUBLIC:
            sizes = tuple(w for w in sizes if w >= self.public_min_window_s)
        return sizes or (max(self.window_sizes_s),)

    def public_units(self) -> tuple[int, int]:
        """The public's finest grain: the finest stored resolution and the finest window
        the public may see. k is applied to these cell-windows only, and every public
        figure is merged from the ones that pass (closed under differencing)."""
        return max(self.h3_resolutions), min(self.allowed_windows(PUBLIC))

    def thresholds(self, role: str) -> Thresholds:
        """What a cell-window needs before ``role`` sees it."""
        if role != PUBLIC:
            return Thresholds()
        unit_resolution, unit_window_s = self.public_units()
        return Thresholds(
            min_rides=self.public_min_rides,
            min_days=self.public_min_days,
            unit_resolution=unit_resolution,
            unit_window_s=unit_window_s,
        )

    def bucket_allowed(self, role: str, bucket_s: int) -> bool:
        """Time-series buckets finer than the public's finest window need a key."""
        return role != PUBLIC or bucket_s >= self.public_min_window_s

    def live_cells(self, role: str) -> bool:
        """Whether ``role``'s live events name the cells a batch touched (a live track)."""
        return role != PUBLIC

    # -- raw readings and fleet health ---------------------------------------------------

    def may_export_raw(self, role: str) -> bool:
        return role in self.raw_roles

    def shows_stored_identities(self, role: str) -> bool:
        """True: kits and rides as stored; False: daily pseudonyms, withheld columns."""
        return role in self.stored_identity_roles

    def may_see_fleet(self, role: str) -> bool:
        return role in self.fleet_roles


def _zones(settings: Settings) -> tuple[Zone, ...]:
    """The zones of ``BIKESENSE_PRIVACY_ZONES_FILE``; none when it is not set."""
    path = settings.privacy.zones_file
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
