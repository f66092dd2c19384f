"""Live updates: the NOTIFY payload, bounded client queues, and SSE end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from api.live import Broadcaster, LiveEvent, parse_payload
from api.roles import Role
from storage.notify import CHANNEL, MAX_PAYLOAD_BYTES, notify_payload


def test_the_payload_is_small_json_and_cut_to_fit_notify() -> None:
    text = notify_payload(
        metrics=["pm25", "noise", "pm25"],
        resolutions=[9, 10],
        windows=[(3600, 1_795_334_400_000)],
        cells=[0x891F1D48177FFFF],
    )
    body = json.loads(text)
    assert body == {
        "v": 1,
        "metrics": ["noise", "pm25"],
        "resolutions": [9, 10],
        "windows": [[3600, 1_795_334_400_000]],
        "cells": ["891f1d48177ffff"],
    }
    many = notify_payload(
        metrics=["pm25"],
        resolutions=[10],
        windows=[(60, i * 60_000) for i in range(500)],
        cells=range(0x8A1F1D48177F000, 0x8A1F1D48177F000 + 5000),
    )
    assert len(many.encode()) <= MAX_PAYLOAD_BYTES
    parsed = json.loads(many)
    assert parsed["cells_truncated"] is True
    assert parsed["windows_range_ms"] == [0, 499 * 60_000]


def test_unreadable_notifications_become_resync() -> None:
    assert parse_payload("not json").kind == "resync"
    assert parse_payload("[1, 2]").kind == "resync"
    event = parse_payload('{"v": 1, "metrics": ["pm25"], "cells": ["89"]}')
    assert event.kind == "aggregates"
    assert "cells" not in event.public().data


def test_a_slow_client_drops_the_oldest_and_is_told_to_resync() -> None:
    async def scenario() -> list[str]:
        hub = Broadcaster(queue_size=2)
        sub = hub.subscribe()
        for i in range(5):
            hub.publish(LiveEvent("aggregates", {"n": i}))
        got = []
        while (event := await sub.get(0.01)) is not None:
            got.append(f"{event.kind}:{event.data.get('n', '')}")
        hub.unsubscribe(sub)
        assert hub.clients == 0
        return got

    assert asyncio.run(scenario()) == ["resync:", "aggregates:3", "aggregates:4"]


def _events(lines: Iterator[str], wanted: int) -> Iterator[tuple[str, dict[str, object]]]:
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            yield kind, json.loads(line[6:])
            wanted -= 1
            if wanted == 0:
                return


@pytest.mark.parametrize("role", [None, Role.OFFICER])
def test_a_notification_reaches_sse_clients(
    make_client: Callable[..., httpx.Client],
    seeded_url: str,
    own_keys: dict[Role, str],
    role: Role | None,
) -> None:
    client = make_client(live_heartbeat_s=0.2)
    headers = {"X-API-Key": own_keys[role]} if role else {}
    payload = notify_payload(
        metrics=["pm25"], resolutions=[10], windows=[(3600, 0)], cells=[0x8A19694A9D47FFF]
    )
    with client.stream("GET", "/v1/live", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        kind, data = next(_events(lines, 1))
    assert kind == "aggregates"
    assert data["metrics"] == ["pm25"]
    if role is None:
        assert "cells" not in data
    else:
        assert data["cells"] == ["8a19694a9d47fff"]
