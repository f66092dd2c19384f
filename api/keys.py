"""API keys: created once, shown once, stored only as a hash.

A key reads ``bsk_<id>_<secret>``: ``id`` is 12 hex characters, public, the
row to look up; ``secret`` is 32 random bytes (256 bits, url-safe base64) from
:mod:`secrets`. Because the secret has full entropy, a slow password KDF adds
nothing: the stored value is HMAC-SHA256 of the whole key under a fixed
domain-separation label, compared in constant time. A stolen table gives no key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from api.roles import KEY_ROLES, Role

_LABEL = b"bikesense api key v1"
_KEY_RE = re.compile(r"^bsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    role: Role
    token: str  # the whole key: shown once, never stored


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    role: str
    label: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def hash_token(token: str) -> bytes:
    return hmac.new(_LABEL, token.encode(), hashlib.sha256).digest()


def parse_token(token: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.match(token.strip())
    return match.group(1) if match else None


def generate_key(role: Role) -> NewKey:
    if role not in KEY_ROLES:
        msg = f"keys are for roles {', '.join(KEY_ROLES)}, not {role!r}"
        raise ValueError(msg)
    key_id = secrets.token_hex(6)
    return NewKey(key_id=key_id, role=role, token=f"bsk_{key_id}_{secrets.token_urlsafe(32)}")


def create_key(conn: psycopg.Connection, role: Role, label: str = "") -> NewKey:
    key = generate_key(role)
    conn.execute(
        "INSERT INTO api_keys (key_id, key_hash, role, label) VALUES (%s, %s, %s, %s)",
        (key.key_id, hash_token(key.token), role.value, label),
    )
    return key


def list_keys(conn: psycopg.Connection) -> list[KeyRecord]:
    with conn.cursor(row_factory=class_row(KeyRecord)) as cur:
        cur.execute(
            "SELECT key_id, role, label, created_at, revoked_at, last_used_at "
            "FROM api_keys ORDER BY created_at, key_id"
        )
        return cur.fetchall()


def revoke_key(conn: psycopg.Connection, key_id: str) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount == 1


async def key_is_active(conn: psycopg.AsyncConnection, key_id: str) -> bool:
    """Whether the key ``key_id`` exists and is not revoked (what a stream opened with
    it re-checks: the token was verified when the stream opened)."""
    cur = await conn.execute(
        "SELECT 1 FROM api_keys WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
    )
    return await cur.fetchone() is not None


#: A key's hash and role, and in the same statement (one round trip per keyed request)
#: its ``last_used_at`` stamped at most once a minute, only when the stored hash is the
#: presented key's: a wrong secret or a revoked key changes nothing. Whether the key is
#: valid is still decided in Python, by the constant-time comparison of the row's hash.
_VERIFY = """
WITH used AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE key_id = %(key_id)s AND revoked_at IS NULL AND key_hash = %(key_hash)s
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)
SELECT key_hash, role FROM api_keys WHERE key_id = %(key_id)s AND revoked_at IS NULL"""


async def verify_key(conn: psycopg.AsyncConnection, token: str) -> Role | None:
    """The role of a valid, unrevoked key; None for anything else."""
    key_id = parse_token(token)
    if key_id is None:
        return None
    presented = hash_token(token)
    cur = await conn.execute(_VERIFY, {"key_id": key_id, "key_hash": presented})
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), presented):
        return None
    return Role(row[1])
