"""Daily pseudonyms of kits and rides for researcher-facing outputs (DESIGN.md decision 4).

A kit's bike is ridden by a mail carrier on a round: if an export names the
kit, a researcher can follow one person's rounds day after day. So outputs
meant for researchers name a kit by a pseudonym that changes every day,
computed with a secret key only the operators hold::

    pseudonym(kit, day) = base32(HMAC-SHA256(key, "kit:<kit id>:<YYYY-MM-DD>"))[:12]

Within a day the pseudonym is stable (a day's rides stay together); across days
nothing links them unless one has the key. Days are local days in the
deployment's time zone (``CoreConfig.day_tz``), so the name does not change at
a UTC midnight in the middle of an evening round. Ride ids, which encode their
start and a hash of (kit, boot), pass through a keyed hash as well, and the
boot id and frame sequence number, counters that run on across days, are
cleared. Only an admin, who holds the key, can map a pseudonym back
(``bikesense kits pseudonym``).

The key is read at the edge like the kit master key: ``BIKESENSE_PSEUDONYM_KEY``
(base64, at least 32 bytes), else the file ``BIKESENSE_PSEUDONYM_KEY_FILE``,
else ``<state dir>/pseudonym.key``, created on first use for the embedded demo.
Changing the key changes every pseudonym, past ones included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from storage.exceptions import SecretError
from storage.keyfiles import key_text_from_environment, read_or_create_key_text

PSEUDONYM_KEY_ENV = "BIKESENSE_PSEUDONYM_KEY"
PSEUDONYM_KEY_FILE_ENV = f"{PSEUDONYM_KEY_ENV}_FILE"  # as storage.keyfiles reads it
KEY_BYTES = 32
#: 12 base32 characters: 60 bits, so two kits of a fleet of 10,000 share a day's
#: pseudonym with probability about 10**8 / 2**61, never in practice.
PSEUDONYM_CHARS = 12


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


def pseudonym(kit_id: int, day: date, key: PseudonymKey) -> str:
    """The kit's name on ``day``: 12 lowercase base32 characters."""
    digest = key.digest(f"kit:{int(kit_id)}:{day.isoformat()}")
    return base64.b32encode(digest).decode().lower()[:PSEUDONYM_CHARS]


def pseudonym_number(kit_id: int, day: date, key: PseudonymKey) -> int:
    """The same pseudonym as a number below 2**60 (what integer columns carry)."""
    digest = key.digest(f"kit:{int(kit_id)}:{day.isoformat()}")
    return int.from_bytes(digest[:8], "big") >> 4


def ride_pseudonym(ride_id: int, key: PseudonymKey) -> int:
    """A ride's id in pseudonymous outputs: stable for the ride, no start time, no kit."""
    return int.from_bytes(key.digest(f"ride:{int(ride_id)}")[:8], "big") >> 1


def local_days(ts_ms: np.ndarray, tz: str) -> np.ndarray:
    """The local calendar day (``datetime64[D]``) of each epoch-ms time in ``tz``."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if not len(ts):
        return np.zeros(0, dtype="datetime64[D]")
    zone = ZoneInfo(tz)
    # Offsets change at most twice a year: look them up per UTC hour present, not per row.
    hours = ts // 3_600_000
    unique_hours, inverse = np.unique(hours, return_inverse=True)
    offsets_ms = np.array([
        int(datetime.fromtimestamp(int(h) * 3600, zone).utcoffset().total_seconds()  # type: ignore[union-attr]
            * 1000)
        for h in unique_hours.tolist()], dtype=np.int64)
    local: np.ndarray = (ts + offsets_ms[inverse.reshape(-1)]).astype("datetime64[ms]").astype(
        "datetime64[D]")
    return local


def pseudonymise(chunk: np.ndarray, key: PseudonymKey, tz: str) -> np.ndarray:
    """A copy of enriched rows (``ENRICHED_DTYPE``) fit for researchers.

    The copy has the same fields, ``kit_id`` as int64. ``kit_id`` becomes the
    kit's daily :func:`pseudonym_number` (local day of the reading in ``tz``),
    ``ride_id`` its :func:`ride_pseudonym`, and ``boot_id`` and ``seq`` are set
    to 0: they count on across days and would link them. Positions, times,
    values and QA flags are unchanged.
    """
    # kit_id widens to int64: a 60-bit pseudonym does not collide within a fleet, 32 bits would.
    dtype = np.dtype([(name, "<i8" if name == "kit_id" else chunk.dtype[name])
                      for name in chunk.dtype.names or ()])
    out = np.empty(len(chunk), dtype=dtype)
    for name in chunk.dtype.names or ():
        out[name] = chunk[name]
    if not len(out):
        return out
    days = local_days(out["ts_ms"], tz)
    pairs, inverse = np.unique(
        np.stack([out["kit_id"].astype(np.int64), days.astype(np.int64)], axis=1),
        axis=0, return_inverse=True)
    numbers = np.array([pseudonym_number(int(kit), _day(int(d)), key)
                        for kit, d in pairs.tolist()], dtype=np.int64)
    out["kit_id"] = numbers[inverse.reshape(-1)]
    rides, ride_inverse = np.unique(out["ride_id"], return_inverse=True)
    out["ride_id"] = np.array([ride_pseudonym(int(r), key) for r in rides.tolist()],
                              dtype=np.int64)[ride_inverse.reshape(-1)]
    out["boot_id"] = 0
    out["seq"] = 0
    return out


def pseudonym_table(kit_ids: Iterable[int], day: date,
                    key: PseudonymKey) -> list[tuple[int, str, int]]:
    """Admins only: (kit, pseudonym, pseudonym number) of each kit on ``day``."""
    return [(k, pseudonym(k, day, key), pseudonym_number(k, day, key)) for k in kit_ids]


def _day(days_since_epoch: int) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + days_since_epoch)


def load_or_create_pseudonym_key(path: Path) -> PseudonymKey:
    """The key kept in ``path``, created (mode 0600) if the file does not exist (the demo)."""
    return PseudonymKey.from_text(
        read_or_create_key_text(path, lambda: PseudonymKey.generate().to_text()))


def pseudonym_key_from_environment(state_dir: Path) -> PseudonymKey:
    """The pseudonym key, read at the edge (see the module docstring)."""
    return PseudonymKey.from_text(key_text_from_environment(
        PSEUDONYM_KEY_ENV, state_dir / "pseudonym.key", lambda: PseudonymKey.generate().to_text()))
