"""API keys against a hostile user (issue 21), tried as that user would.

A key holder whose key is revoked keeps an open ``/v1/live`` stream; someone without a
key guesses well-formed keys to get round the public rate limit. Neither works.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import httpx
import psycopg

from api.keys import parse_token, revoke_key
from api.roles import Role


def test_revoking_a_key_ends_its_open_live_stream_within_seconds(
    make_client: Callable[..., httpx.Client], seeded_url: str, own_keys: dict[Role, str]
) -> None:
    client = make_client(live_heartbeat_s=0.5)
    token = own_keys[Role.OFFICER]
    headers = {"X-API-Key": token}
    with client.stream("GET", "/v1/live", headers=headers) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        key_id = parse_token(token)
        assert key_id is not None
        with psycopg.connect(seeded_url, autocommit=True) as conn:
            assert revoke_key(conn, key_id)
        revoked_at = time.monotonic()
        rest = list(lines)  # the server ends the stream: this returns
        ended_after_s = time.monotonic() - revoked_at
    assert "event: revoked" in rest
    assert ended_after_s < 10
    # And it cannot open another.
    assert client.get("/v1/live", headers=headers).status_code == 401


def test_an_open_stream_of_a_valid_key_goes_on(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str]
) -> None:
    client = make_client(live_heartbeat_s=0.5)
    headers = {"X-API-Key": own_keys[Role.OFFICER]}
    with client.stream("GET", "/v1/live", headers=headers) as response:
        lines = response.iter_lines()
        started = time.monotonic()
        seen = []
        while time.monotonic() - started < 5:  # past two key checks
            seen.append(next(lines))
    assert ": ping" in seen
    assert not any("revoked" in line for line in seen)


def test_guessed_keys_count_against_the_public_rate_limit(
    make_client: Callable[..., httpx.Client], own_keys: dict[Role, str]
) -> None:
    client = make_client(public_rate_per_s=0.5, public_burst=5)
    real = own_keys[Role.OFFICER]
    key_id = parse_token(real)

    def guess() -> str:  # well formed: a real key's id, or a made-up one, any secret
        return f"bsk_{key_id}_{secrets.token_urlsafe(32)}"

    codes = [client.get("/v1/meta", headers={"X-API-Key": guess()}).status_code for _ in range(12)]
    assert codes[:5] == [401] * 5
    assert set(codes[5:]) == {429}
    # The guesses spent the caller's public requests ...
    assert client.get("/v1/meta").status_code == 429
    # ... but a real key is not limited.
    assert client.get("/v1/meta", headers={"X-API-Key": real}).status_code == 200
