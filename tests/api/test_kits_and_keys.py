"""Fleet health for operators, and API keys from creation to revocation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.keys import create_key, generate_key, hash_token, parse_token, revoke_key, verify_key
from api.roles import Role
from storage.kits import MasterKey, record_status, register_kit, touch_last_seen
from storage.rejects import Reject, insert_rejects
from tests.api.api_factories import NOW_MS, ride, write


def test_keys_are_random_parseable_and_stored_as_hashes() -> None:
    key = generate_key(Role.OFFICER)
    assert parse_token(key.token) == key.key_id
    assert parse_token(key.token + "x") is None
    assert parse_token("bsk_short") is None
    assert len(hash_token(key.token)) == 32
    assert hash_token(key.token) != hash_token(generate_key(Role.OFFICER).token)
    with pytest.raises(ValueError, match="keys are for roles"):
        generate_key(Role.PUBLIC)


def test_fleet_health(
    make_client: Callable[..., httpx.Client], seeded_url: str, own_keys: dict[Role, str]
) -> None:
    # NOW_MS: the API's now (conftest.py); the scenario's rides are two days older.
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        master = MasterKey.generate()
        for kit in (1, 2):
            register_kit(conn, master, kit, pseudonym=f"bike-{kit}")
        record_status(
            conn,
            1,
            received_ms=NOW_MS,
            status={"uptime_s": 10},
            battery_pct=81.5,
            firmware_version="1.4.2",
        )
        touch_last_seen(conn, {1: NOW_MS})
        insert_rejects(
            conn,
            [
                Reject(b"x", "bad_mac", NOW_MS, kit_id=1),
                Reject(b"y", "bad_mac", NOW_MS, kit_id=1),
                Reject(b"z", "truncated", NOW_MS, kit_id=None),
            ],
        )
    write(
        seeded_url,
        [ride(kit_id=2, ride_id=900, start=(52.13, 4.66), n=30, t0_ms=NOW_MS - 60_000, boot_id=9)],
    )
    client = make_client()
    assert client.get("/v1/kits").status_code == 401
    assert (
        client.get("/v1/kits", headers={"X-API-Key": own_keys[Role.RESEARCHER]}).status_code == 403
    )
    response = client.get("/v1/kits", headers={"X-API-Key": own_keys[Role.OFFICER]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["since"] == "2026-11-22T12:00:00Z"  # by default the 24 hours before now
    kits = {k["kit_id"]: k for k in body["kits"]}
    assert kits[1]["pseudonym"] == "bike-1"
    assert kits[1]["battery_pct"] == 81.5
    assert kits[1]["firmware_version"] == "1.4.2"
    assert kits[1]["last_seen_at"] is not None
    assert kits[1]["rejected"] == [{"reason": "bad_mac", "count": 2}]
    assert kits[2]["frames_accepted"] == 3
    assert kits[2]["readings_stored"] == 30
    assert body["rejected_unknown_kit"] == [{"reason": "truncated", "count": 1}]
    bad = client.get(
        "/v1/kits",
        params={"since": "1990-01-01T00:00:00Z"},
        headers={"X-API-Key": own_keys[Role.ADMIN]},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["parameter"] == "since"


def test_a_revoked_key_is_refused(
    make_client: Callable[..., httpx.Client], seeded_url: str, own_keys: dict[Role, str]
) -> None:
    client = make_client()
    key = own_keys[Role.OFFICER]
    assert client.get("/v1/meta", headers={"X-API-Key": key}).json()["role"] == "officer"
    with psycopg.connect(seeded_url, autocommit=True) as conn:
        assert revoke_key(conn, key[4:16])
        assert not revoke_key(conn, key[4:16])
    response = client.get("/v1/meta", headers={"X-API-Key": key})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"][0]["message"]


def test_the_cli_creates_lists_and_revokes_keys(
    seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIKESENSE_DATABASE_URL", seeded_url)
    runner = CliRunner()
    created = runner.invoke(cli_app, ["keys", "create", "--role", "researcher", "--label", "uni"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    key_id = parse_token(token)
    assert key_id is not None
    with psycopg.connect(seeded_url) as conn:
        row = conn.execute(
            "SELECT role, label, key_hash FROM api_keys WHERE key_id = %s", (key_id,)
        ).fetchone()
    assert row is not None
    assert row[:2] == ("researcher", "uni")
    assert bytes(row[2]) == hash_token(token)  # the key itself is nowhere in the table
    listed = runner.invoke(cli_app, ["keys", "list"])
    assert key_id in listed.stdout
    assert token not in listed.stdout
    assert runner.invoke(cli_app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(cli_app, ["keys", "revoke", key_id]).exit_code == 1
    wrong = runner.invoke(cli_app, ["keys", "create", "--role", "public"])
    assert wrong.exit_code == 2


def test_the_public_is_rate_limited(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str]
) -> None:
    client = make_client(public_rate_per_s=0.5, public_burst=3)
    codes = [client.get("/v1/meta").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = client.get("/v1/meta")
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # A key lifts the public limit.
    assert client.get("/v1/meta", headers={"X-API-Key": own_keys[Role.OFFICER]}).status_code == 200
    # The page itself is not limited.
    assert client.get("/").status_code == 200


def test_health_and_metrics(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["database"] == "ok"
    client.get("/v1/meta")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (
        'bikesense_api_requests_total{method="GET",route="/v1/meta",status="200"}' in metrics.text
    )
    assert "bikesense_api_tile_render_seconds_bucket" in metrics.text


def test_metrics_labels_stay_bounded(client: httpx.Client) -> None:
    # Made-up methods would each add a label value to every series they touch.
    for i in range(5):
        client.request(f"BREW{i}", "/v1/meta")
    text = client.get("/metrics").text
    assert "BREW" not in text
    assert 'method="other",route="/v1/meta",status="405"' in text


def test_health_says_degraded_without_a_database(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(url="postgresql://nobody@127.0.0.1:1/none", database_timeout_s=1.0)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "unavailable", "live_clients": 0}
    started = datetime.now(UTC)
    cells = client.get("/v1/cells", params={"metric": "pm25", "bbox": "4,52,5,53"})
    assert cells.status_code == 503
    assert cells.json()["error"] == "unavailable"
    assert (datetime.now(UTC) - started).total_seconds() < 5


def test_a_key_is_checked_and_stamped_in_one_round_trip(migrated_database_url: str) -> None:
    """verify_key: one statement per keyed request; last_used_at is stamped only for the
    right secret of an unrevoked key, and at most once a minute; a wrong secret, a
    revoked key or an unknown id gives None and changes nothing."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        key = create_key(conn, Role.RESEARCHER, "one trip")
        other = create_key(conn, Role.OFFICER, "revoked")
        assert revoke_key(conn, other.key_id)
    wrong = f"bsk_{key.key_id}_{generate_key(Role.OFFICER).token[17:]}"
    unknown = generate_key(Role.OFFICER).token

    async def used(conn: psycopg.AsyncConnection, key_id: str) -> datetime | None:
        cur = await conn.execute("SELECT last_used_at FROM api_keys WHERE key_id = %s", (key_id,))
        row = await cur.fetchone()
        assert row is not None
        stamp: datetime | None = row[0]
        return stamp

    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(migrated_database_url, autocommit=True)
        async with conn:
            statements: list[object] = []
            execute = conn.execute

            async def counted(query: Any, params: Any = None) -> Any:
                statements.append(query)
                return await execute(query, params)

            conn.execute = counted  # type: ignore[method-assign,assignment]
            for token in (wrong, unknown, other.token, "bsk_nonsense"):
                assert await verify_key(conn, token) is None
            assert len(statements) == 3  # a malformed key is not looked up
            conn.execute = execute  # type: ignore[method-assign]
            assert await used(conn, key.key_id) is None
            assert await used(conn, other.key_id) is None

            conn.execute = counted  # type: ignore[method-assign,assignment]
            assert await verify_key(conn, key.token) is Role.RESEARCHER
            assert len(statements) == 4
            conn.execute = execute  # type: ignore[method-assign]
            first = await used(conn, key.key_id)
            assert first is not None
            # Within the minute: not stamped again.
            await conn.execute(
                "UPDATE api_keys SET last_used_at = now() - interval '30 seconds' "
                "WHERE key_id = %s",
                (key.key_id,),
            )
            recent = await used(conn, key.key_id)
            assert await verify_key(conn, key.token) is Role.RESEARCHER
            assert await used(conn, key.key_id) == recent
            # After it: stamped, and a wrong secret then stamps nothing.
            await conn.execute(
                "UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE key_id = %s",
                (key.key_id,),
            )
            old = await used(conn, key.key_id)
            assert await verify_key(conn, wrong) is None
            assert await used(conn, key.key_id) == old
            assert await verify_key(conn, key.token) is Role.RESEARCHER
            stamped = await used(conn, key.key_id)
            assert stamped is not None
            assert old is not None
            assert stamped > old
            # Revoked since: refused, not stamped.
            await conn.execute(
                "UPDATE api_keys SET revoked_at = now(), last_used_at = NULL WHERE key_id = %s",
                (key.key_id,),
            )
            assert await verify_key(conn, key.token) is None
            assert await used(conn, key.key_id) is None

    asyncio.run(scenario())
