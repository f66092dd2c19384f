"""What the simulator knows about each reading and frame that the pipeline must find out."""

from __future__ import annotations

from enum import IntEnum, IntFlag


class TruthFlag(IntFlag):
    """Per reading: the conditions the simulator put it in (several may hold)."""

    WARMING_UP = 1 << 0  # within the sensors' warm-up after power-on (status bit set too)
    HUMID = 1 << 1  # true relative humidity above 75 %: optical PM reads high
    GPS_LOST = 1 << 2  # no fix: position and GNSS speed absent
    GPS_JUMP = 1 << 3  # reported position displaced by a multipath jump (tens to hundreds of m)
    STUCK = 1 << 4  # the PM sensor repeats one value whatever the truth
    CLOCK_SKEWED = 1 << 5  # ts_ms is the kit's skewed clock, not the true time
    BUFFERED = 1 << 6  # sent late, in a burst after an offline period
    DUPLICATED = 1 << 7  # its frame was published more than once
    CORRUPTED = 1 << 8  # its frame was damaged on purpose: it cannot be decoded
    WRONG_MAC = 1 << 9  # its frame was signed with the wrong key: it must be refused

    @classmethod
    def undeliverable(cls) -> TruthFlag:
        """Readings that no correct pipeline may store."""
        return cls.CORRUPTED | cls.WRONG_MAC

    @classmethod
    def default_excluded(cls) -> TruthFlag:
        """Readings left out of expected aggregates unless a test asks otherwise.

        Undeliverable ones, those without a position, and those a QA stage is
        expected to flag: warm-up, GNSS jumps, a stuck sensor.
        """
        return cls.undeliverable() | cls.GPS_LOST | cls.WARMING_UP | cls.GPS_JUMP | cls.STUCK


class FrameFate(IntEnum):
    """What the simulator did to a frame on its way out."""

    OK = 0
    CORRUPTED = 1  # bytes damaged after encoding (see CorruptionKind)
    WRONG_MAC = 2  # encoded with a key that is not the kit's
    UNKNOWN_KIT = 3  # from a kit id that is not in the fleet (its key is nobody's)


class CorruptionKind(IntEnum):
    NONE = 0
    BIT_FLIPS = 1  # a few bits flipped anywhere in the frame
    TRUNCATED = 2  # cut short
    GARBAGE = 3  # random bytes of a plausible length
    PADDED = 4  # extra bytes after the end of the frame
