"""Daily pseudonyms of kits and rides for researcher-facing outputs (docs/design.md decision 4).

A kit's bike is ridden by a mail carrier on a round: if an export names the
kit, a researcher can follow one person's rounds day after day. So outputs
meant for researchers name a kit by a pseudonym that changes every day,
computed with a secret key only the operators hold::

    pseudonym(kit, day)      = base32(HMAC-SHA256(key, "kit:<kit id>:<YYYY-MM-DD>"))[:12]
    ride_pseudonym(ride, day) = base32(HMAC-SHA256(key, "ride:<ride id>:<YYYY-MM-DD>"))[:16]

Within a day the pseudonym is stable (a day's rides stay together); across days
nothing links them unless one has the key. Days are local days in the
deployment's time zone (``CoreConfig.day_tz``), so the name does not change at
a UTC midnight in the middle of an evening round. Everything a researcher sees
is scoped to one local day, rides included: the part of a ride after local
midnight carries the next day's kit pseudonym and a ride pseudonym of its own,
so a ride that crosses midnight cannot tie two days' pseudonyms together.

What else would link days is withheld (:data:`WITHHELD_FIELDS`): the real kit
and ride ids, the boot id and frame sequence number (counters that run on
across days), the index in the frame (the phase of a kit's frame cadence), and
the time of arrival (a kit that uploads after midnight sends readings of two
days in one frame, all with one arrival time). Times are cut to whole seconds:
the sub-second phase of a kit's sampling clock lasts as long as its boot.
Only an admin, who holds the key, can map a pseudonym back
(``bikesense kits pseudonym``).

The key is read at the edge like the kit master key and passed to
:func:`pseudonym_key`: ``BIKESENSE_PSEUDONYM_KEY`` (base64, at least 32 bytes),
else the file ``BIKESENSE_PSEUDONYM_KEY_FILE``, else ``<state dir>/pseudonym.key``,
created on first use for the embedded demo.
Changing the key changes every pseudonym, past ones included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from storage.exceptions import SecretError
from storage.keyfiles import key_text, read_or_create_key_text

KEY_BYTES = 32
#: 12 base32 characters: 60 bits, so two kits of a fleet of 10,000 share a day's
#: pseudonym with probability about 10**8 / 2**61, never in practice.
PSEUDONYM_CHARS = 12
#: 16 base32 characters (80 bits) for rides: a fleet rides millions of them over the years.
RIDE_PSEUDONYM_CHARS = 16

#: Fields of an enriched reading that researchers never get (see the module docstring).
WITHHELD_FIELDS = ("kit_id", "boot_id", "seq", "idx", "ride_id", "received_ms")


@dataclass(frozen=True, slots=True)
class PseudonymKey:
    """The secret of the pseudonyms; never printed (``repr`` hides it)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            msg = f"a pseudonym key needs at least {KEY_BYTES} bytes (got {len(self.secret)})"
            raise SecretError(msg)

    @classmethod
    def generate(cls) -> PseudonymKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> PseudonymKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError) as exc:
            msg = "a pseudonym key is written as base64 (32 bytes or more)"
            raise SecretError(msg) from exc

    def to_text(self) -> str:
        return base64.b64encode(self.secret).decode()

    def digest(self, message: str) -> bytes:
        return hmac.digest(self.secret, message.encode(), hashlib.sha256)


def _base32(digest: bytes, chars: int) -> str:
    return base64.b32encode(digest).decode().lower()[:chars]


def pseudonym(kit_id: int, day: date, key: PseudonymKey) -> str:
    """The kit's name on ``day``: 12 lowercase base32 characters."""
    return _base32(key.digest(f"kit:{int(kit_id)}:{day.isoformat()}"), PSEUDONYM_CHARS)


def ride_pseudonym(ride_id: int, day: date, key: PseudonymKey) -> str:
    """A ride's name on ``day``: 16 lowercase base32 characters, no start time, no kit.

    The day is part of the name, so the two sides of local midnight of one ride
    are two rides to a researcher.
    """
    return _base32(key.digest(f"ride:{int(ride_id)}:{day.isoformat()}"), RIDE_PSEUDONYM_CHARS)


def local_days(ts_ms: np.ndarray, tz: str) -> np.ndarray:
    """The local calendar day (``datetime64[D]``) of each epoch-ms time in ``tz``."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if not len(ts):
        return np.zeros(0, dtype="datetime64[D]")
    zone = ZoneInfo(tz)
    # Offsets change at most twice a year: look them up per UTC hour present, not per row.
    hours = ts // 3_600_000
    unique_hours, inverse = np.unique(hours, return_inverse=True)
    offsets_ms = np.array(
        [
            int(
                datetime.fromtimestamp(int(h) * 3600, zone).utcoffset().total_seconds()  # type: ignore[union-attr]
                * 1000
            )
            for h in unique_hours.tolist()
        ],
        dtype=np.int64,
    )
    local: np.ndarray = (
        (ts + offsets_ms[inverse.reshape(-1)]).astype("datetime64[ms]").astype("datetime64[D]")
    )
    return local


def local_day_spans(
    start: datetime, end: datetime, tz: str
) -> Iterator[tuple[date, datetime, datetime]]:
    """The local days of ``tz`` that ``[start, end)`` touches, in order, each as
    ``(day, lo, hi)`` with ``[lo, hi)`` the part of the range on that day (UTC).

    A local day is 23 or 25 hours long when the clocks change; its bounds are
    the instants of local midnight.
    """
    zone = ZoneInfo(tz)
    day = start.astimezone(zone).date()
    while True:
        day_start = datetime.combine(day, time(), zone).astimezone(UTC)
        if day_start >= end:
            return
        nxt = day + timedelta(days=1)
        day_end = datetime.combine(nxt, time(), zone).astimezone(UTC)
        lo, hi = max(start, day_start), min(end, day_end)
        if lo < hi:
            yield day, lo, hi
        day = nxt


def researcher_dtype(dtype: np.dtype[np.void]) -> np.dtype[np.void]:
    """The fields of ``dtype`` a researcher gets: pseudonyms first, nothing withheld."""
    kept = [(name, dtype[name]) for name in dtype.names or () if name not in WITHHELD_FIELDS]
    return np.dtype(
        [
            ("kit_pseudonym", f"S{PSEUDONYM_CHARS}"),
            ("ride_pseudonym", f"S{RIDE_PSEUDONYM_CHARS}"),
            *kept,
        ]
    )


def pseudonymise(chunk: np.ndarray, key: PseudonymKey, tz: str) -> np.ndarray:
    """Enriched rows (``ENRICHED_DTYPE``) as a researcher gets them (:func:`researcher_dtype`).

    ``kit_pseudonym`` is the kit's :func:`pseudonym` and ``ride_pseudonym`` the
    ride's :func:`ride_pseudonym`, both on the local day of the reading in
    ``tz``; ``ts_ms`` is cut to the whole second; :data:`WITHHELD_FIELDS` are
    left out. Positions, values and QA flags are unchanged. This is the
    reference for what ``storage.exports`` computes in SQL.
    """
    out = np.empty(len(chunk), dtype=researcher_dtype(chunk.dtype))
    for name in out.dtype.names or ():
        if name in chunk.dtype.names:  # type: ignore[operator]
            out[name] = chunk[name]
    if not len(out):
        return out
    out["ts_ms"] -= out["ts_ms"] % 1000
    days = local_days(chunk["ts_ms"], tz).astype(np.int64)
    for field_name, ids, name_of in (
        ("kit_pseudonym", chunk["kit_id"], pseudonym),
        ("ride_pseudonym", chunk["ride_id"], ride_pseudonym),
    ):
        pairs, inverse = np.unique(
            np.stack([ids.astype(np.int64), days], axis=1), axis=0, return_inverse=True
        )
        names = np.array(
            [name_of(int(i), _day(int(d)), key) for i, d in pairs.tolist()],
            dtype=out.dtype[field_name],
        )
        out[field_name] = names[inverse.reshape(-1)]
    return out


def pseudonym_table(kit_ids: Iterable[int], day: date, key: PseudonymKey) -> list[tuple[int, str]]:
    """Admins only: (kit, pseudonym) of each kit on ``day``."""
    return [(k, pseudonym(k, day, key)) for k in kit_ids]


def _day(days_since_epoch: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + days_since_epoch)


def load_or_create_pseudonym_key(path: Path) -> PseudonymKey:
    """The key kept in ``path``, created (mode 0600) if the file does not exist (the demo)."""
    return PseudonymKey.from_text(
        read_or_create_key_text(path, lambda: PseudonymKey.generate().to_text())
    )


def pseudonym_key(text: str | None, file: str | Path | None, state_dir: Path) -> PseudonymKey:
    """The pseudonym key from ``text`` (``BIKESENSE_PSEUDONYM_KEY``, read at the edge), else
    from the file ``file`` (``BIKESENSE_PSEUDONYM_KEY_FILE``), else from
    ``<state_dir>/pseudonym.key``, created on first use."""
    return PseudonymKey.from_text(
        key_text(text, file, state_dir / "pseudonym.key", lambda: PseudonymKey.generate().to_text())
    )
