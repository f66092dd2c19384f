"""A kit's states by readings offset (stream/faust_app/kitlog.py), and the qa step over it:
a message processed again runs with the state it ran with the first time."""

from __future__ import annotations

import numpy as np
import pytest

from stream.core.process import CoreConfig
from stream.core.state import KitState, RideSpan
from stream.faust_app.codec import (
    decode_enriched,
    decode_kit_log,
    encode_kit_log,
    encode_kit_state,
    encode_readings,
    kit_key,
)
from stream.faust_app.exceptions import EnvelopeError
from stream.faust_app.kitlog import UNKNOWN_OFFSET, KitStateLog
from stream.faust_app.steps import QaOutcome, qa_step
from tests.stream.stream_factories import T0_MS, riding

CORE = CoreConfig()
MINUTE_MS = 60_000


def _state(end_ms: int) -> KitState:
    return KitState(kit_id=7, rides=(RideSpan(1, 1, 0, end_ms),))


def test_a_message_starts_from_the_newest_state_below_its_offset() -> None:
    log = KitStateLog(7, ((3, _state(30)), (8, _state(80)), (12, _state(120))))
    assert log.before(13) == _state(120)
    assert log.before(12) == _state(80)  # 12 again: the state before it, not its own
    assert log.before(9) == _state(80)
    assert log.before(4) == _state(30)
    assert KitStateLog(7).before(5) is None
    assert log.reaches(4)
    assert not log.reaches(3)
    assert log.before(2) == _state(30)  # below what is kept: the oldest kept


def test_a_message_processed_again_replaces_its_own_entry_and_those_after_it() -> None:
    log = KitStateLog(7, ((3, _state(30)), (8, _state(80)), (12, _state(120))))
    again = log.after(8, _state(81), committed=None)
    assert again.entries == ((3, _state(30)), (8, _state(81)))


def test_entries_below_the_committed_offset_go_but_the_newest_of_them() -> None:
    log = KitStateLog(7, ((3, _state(30)), (8, _state(80)), (12, _state(120))))
    # Committed 10: a replay starts at 10 or later, from the state after 8.
    assert log.after(15, _state(150), committed=10).entries == (
        (8, _state(80)),
        (12, _state(120)),
        (15, _state(150)),
    )
    assert log.after(15, _state(150), committed=15).entries == (
        (12, _state(120)),
        (15, _state(150)),
    )


def test_the_entries_are_bounded() -> None:
    log = KitStateLog(7)
    for offset in range(10):
        log = log.after(offset, _state(offset), committed=None, max_entries=4)
    assert [at for at, _ in log.entries] == [6, 7, 8, 9]


def test_the_table_value_round_trips_and_a_version_1_state_reads_as_one_entry() -> None:
    log = KitStateLog(7, ((UNKNOWN_OFFSET, _state(10)), (4, _state(40))))
    assert decode_kit_log(encode_kit_log(log)) == log
    # What a worker of the release before wrote: one state, from before any offset.
    old = decode_kit_log(encode_kit_state(_state(10)))
    assert old == KitStateLog(7, ((UNKNOWN_OFFSET, _state(10)),))
    assert old.before(0) == _state(10)


def _step(readings: np.ndarray, state: bytes | None, offset: int) -> QaOutcome:
    received = np.full(len(readings), int(readings["ts_ms"].max()) + 2000)
    return qa_step(encode_readings(readings, received), kit_key(7), state, CORE, 7, offset=offset)


def _rows(outcome: QaOutcome) -> np.ndarray:
    rows = np.concatenate([decode_enriched(value) for _, value in outcome.forwards])
    return rows[np.lexsort((rows["idx"], rows["seq"]))]


@pytest.fixture
def three_messages() -> list[np.ndarray]:
    """A kit's messages at offsets 0, 1, 2: a ride; after 24 minutes without readings, a
    second ride; then a late upload of minutes 10 and 11, which joins the first ride
    (the earlier of the two it is within 20 minutes of) and brings its end to 11 min."""
    return [
        riding(60, t0_ms=T0_MS),
        riding(60, t0_ms=T0_MS + 25 * MINUTE_MS, seq0=100),
        riding(60, t0_ms=T0_MS + 10 * MINUTE_MS, seq0=50),
    ]


def test_a_message_processed_again_gets_the_rides_and_flags_of_its_first_pass(
    three_messages: list[np.ndarray],
) -> None:
    """faust writes the table's changelog as it goes and commits offsets every few seconds:
    after a kill -9, the next owner restores the kit's value as of message 2 and processes
    message 1 again. It must see the state message 0 left, not the one message 2 left, or
    the second ride is taken for the first (whose end the late upload moved to 11 min,
    within 20 min of it): its readings get another ride id, and when the first copy of
    what message 1 produced was lost with the crash, that other id is what is stored."""
    first, second, late = three_messages
    value = None
    passes = []
    for offset, readings in enumerate((first, second, late)):
        outcome = _step(readings, value, offset)
        passes.append(outcome)
        value = outcome.state
    rides = [set(_rows(o)["ride_id"].tolist()) for o in passes]
    assert rides[0] == rides[2] != rides[1]  # two rides; the late upload joined the first

    again = _step(second, value, 1)
    np.testing.assert_array_equal(_rows(again), _rows(passes[1]))
    # And the table goes on from there: message 2 processed again gives the same too.
    assert again.state is not None
    np.testing.assert_array_equal(_rows(_step(late, again.state, 2)), _rows(passes[2]))

    # What the table held before it kept states by offset: the last state alone. With it,
    # message 1 processed again joins the first ride.
    last = decode_kit_log(value).entries[-1][1] if value is not None else None
    assert last is not None
    one_state = _step(second, encode_kit_state(last), 1)
    assert set(_rows(one_state)["ride_id"].tolist()) == rides[0]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b'{"v":3,"kit":7}\n1 [[],null]', "version 3, expected 1 or 2"),
        (b'{"v":2,"kit":7}\n1 {"rides":[]}', "kit state is not valid"),
        (b'{"v":2,"kit":7}\nfirst [[],null]', "kit state is not valid"),
        (b'{"v":2}\n1 [[],null]', "kit state is not valid"),
        (b"not json", "kit state is not valid"),
    ],
)
def test_bad_table_values_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        decode_kit_log(blob)
    with pytest.raises(EnvelopeError, match=message):
        _step(riding(10), blob, 5)  # the qa step says the same
