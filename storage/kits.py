"""Kits: pseudonymous identities, their HMAC secrets encrypted at rest, and their health.

A kit signs its frames with a 32-byte secret. The server must read that secret
back to verify the MACs, so it cannot be hashed like a password: it is stored
encrypted with AES-256-GCM (NIST SP 800-38D) under a server master key that
never enters the database. Each secret has its own random 96-bit nonce, and the
kit id is the associated data, so a ciphertext copied onto another kit's row
fails to decrypt instead of handing that kit someone else's key.

The master key comes from the edge (the CLI, the API lifespan): see
:meth:`MasterKey.from_text` and :func:`load_or_create_master_key`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from storage.exceptions import KitError, KitExistsError, SecretError, UnknownKitError
from storage.keyfiles import read_or_create_key_text

#: Length of a kit's HMAC secret (HMAC-SHA256 keys of the hash's output size, RFC 2104 §3).
SECRET_BYTES = 32
MASTER_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM nonce size recommended by SP 800-38D §8.2
MAX_KIT_ID = 2**32 - 1


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The server key that encrypts kit secrets; ``key_id`` is stored with each secret."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != MASTER_KEY_BYTES:
            raise SecretError(
                f"the kit master key must be {MASTER_KEY_BYTES} bytes (got {len(self.key)})"
            )
        if not self.key_id:
            raise SecretError("the kit master key needs a non-empty key id")

    @classmethod
    def generate(cls, key_id: str = "k1") -> MasterKey:
        return cls(key_id, secrets.token_bytes(MASTER_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Parse ``<key id>:<base64 of 32 bytes>`` (what :meth:`to_text` writes)."""
        key_id, sep, encoded = text.strip().rpartition(":")
        if not sep:
            key_id, encoded = "k1", text.strip()
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise SecretError(
                "the kit master key is not valid base64 (expected '<key id>:<base64 of 32 bytes>')"
            ) from exc
        return cls(key_id, key)

    def to_text(self) -> str:
        return f"{self.key_id}:{base64.b64encode(self.key).decode()}"


def load_or_create_master_key(path: Path) -> MasterKey:
    """The master key kept in ``path``, created (mode 0600) if the file does not exist.

    For the embedded demo; a deployment passes its key in from a secret store.
    Losing this file makes every stored kit secret unreadable.
    """
    return MasterKey.from_text(
        read_or_create_key_text(path, lambda: MasterKey.generate().to_text())
    )


def _aad(kit_id: int) -> bytes:
    return b"bikesense kit secret v1 " + str(kit_id).encode()


def encrypt_secret(master: MasterKey, kit_id: int, secret: bytes) -> tuple[bytes, bytes]:
    """``(nonce, ciphertext)`` of a kit secret."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce, AESGCM(master.key).encrypt(nonce, secret, _aad(kit_id))


def decrypt_secret(
    master: MasterKey, kit_id: int, key_id: str, nonce: bytes, ciphertext: bytes
) -> bytes:
    if key_id != master.key_id:
        raise SecretError(
            f"kit {kit_id}'s secret is encrypted under master key {key_id!r}, "
            f"but the key given is {master.key_id!r}"
        )
    try:
        return AESGCM(master.key).decrypt(nonce, ciphertext, _aad(kit_id))
    except InvalidTag as exc:
        raise SecretError(
            f"kit {kit_id}'s secret does not decrypt with master key "
            f"{master.key_id!r}: wrong key, or the row was tampered with"
        ) from exc


@dataclass(frozen=True, slots=True)
class KitCredentials:
    """What registering a kit hands out once: flash ``secret`` into the kit."""

    kit_id: int
    pseudonym: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KitSecret:
    """A kit's MAC secret as ingest needs it; revoked kits are listed as inactive."""

    kit_id: int
    secret: bytes = field(repr=False)
    active: bool


@dataclass(frozen=True, slots=True)
class Kit:
    """A kit as operators see it (no secret)."""

    kit_id: int
    pseudonym: str
    status: str
    registered_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None
    battery_pct: float | None
    firmware_version: str | None
    last_status: dict[str, Any] | None
    last_status_at: datetime | None


_SELECT_KITS = (
    "SELECT kit_id, pseudonym, status, registered_at, revoked_at, last_seen_at,"
    " battery_pct, firmware_version, last_status, last_status_at FROM kits"
)


def register_kit(
    conn: psycopg.Connection[Any],
    master: MasterKey,
    kit_id: int,
    pseudonym: str | None = None,
    *,
    secret: bytes | None = None,
) -> KitCredentials:
    """Register a kit; the secret and pseudonym are random unless given.

    A given ``secret`` is for kits whose key was made elsewhere (the simulator's
    fleet, a kit re-registered after a database restore).
    """
    if not 0 <= kit_id <= MAX_KIT_ID:
        raise KitError(f"kit id {kit_id} is not a 32-bit unsigned integer")
    if secret is not None and len(secret) != SECRET_BYTES:
        raise KitError(f"a kit secret must be {SECRET_BYTES} bytes (got {len(secret)})")
    pseudonym = pseudonym or f"kit-{secrets.token_hex(4)}"
    secret = secret if secret is not None else secrets.token_bytes(SECRET_BYTES)
    nonce, ciphertext = encrypt_secret(master, kit_id, secret)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO kits"
                " (kit_id, pseudonym, secret_key_id, secret_nonce, secret_ciphertext)"
                " VALUES (%s, %s, %s, %s, %s)",
                (kit_id, pseudonym, master.key_id, nonce, ciphertext),
            )
    except psycopg.errors.UniqueViolation as exc:
        what = "pseudonym" if "pseudonym" in str(exc) else "kit id"
        raise KitExistsError(
            f"cannot register kit {kit_id} as {pseudonym!r}: that {what} is already registered"
        ) from exc
    return KitCredentials(kit_id, pseudonym, secret)


def kit_secrets(
    conn: psycopg.Connection[Any], master: MasterKey, kit_ids: Collection[int] | None = None
) -> dict[int, KitSecret]:
    """Every registered kit's secret (or those of ``kit_ids`` that are registered), revoked
    ones marked inactive (ingest caches this)."""
    query = "SELECT kit_id, status, secret_key_id, secret_nonce, secret_ciphertext FROM kits"
    if kit_ids is None:
        rows = conn.execute(query).fetchall()
    else:
        rows = conn.execute(query + " WHERE kit_id = ANY(%s)", (list(kit_ids),)).fetchall()
    return {
        int(kit_id): KitSecret(
            int(kit_id),
            decrypt_secret(master, kit_id, key_id, nonce, ct),
            active=status == "active",
        )
        for kit_id, status, key_id, nonce, ct in rows
    }


def active_kit_secrets(conn: psycopg.Connection[Any], master: MasterKey) -> dict[int, bytes]:
    """Secrets of the kits that may send data."""
    return {k: s.secret for k, s in kit_secrets(conn, master).items() if s.active}


def get_kit(conn: psycopg.Connection[Any], kit_id: int) -> Kit | None:
    with conn.cursor(row_factory=class_row(Kit)) as cur:
        return cur.execute(_SELECT_KITS + " WHERE kit_id = %s", (kit_id,)).fetchone()


def list_kits(conn: psycopg.Connection[Any], *, include_revoked: bool = True) -> list[Kit]:
    query = _SELECT_KITS + " WHERE %s OR status = 'active' ORDER BY kit_id"
    with conn.cursor(row_factory=class_row(Kit)) as cur:
        return cur.execute(query, (include_revoked,)).fetchall()


def revoke_kit(conn: psycopg.Connection[Any], kit_id: int) -> bool:
    """Stop accepting a kit's frames; False if it was already revoked."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE kits SET status = 'revoked', revoked_at = now()"
            " WHERE kit_id = %s AND status <> 'revoked'",
            (kit_id,),
        )
        if cur.rowcount == 0 and get_kit(conn, kit_id) is None:
            raise UnknownKitError(f"kit {kit_id} is not registered")
    return cur.rowcount == 1


def touch_last_seen(conn: psycopg.Connection[Any], seen_ms: Mapping[int, int]) -> None:
    """Record when kits were last heard from (Unix ms); never moves a time backwards."""
    if not seen_ms:
        return
    kit_ids = list(seen_ms)
    with conn.transaction():
        conn.execute(
            "UPDATE kits SET last_seen_at = GREATEST(last_seen_at, s.seen)"
            " FROM (SELECT k, timestamptz 'epoch' + m * interval '1 millisecond' AS seen"
            "       FROM unnest(%s::bigint[], %s::bigint[]) AS u(k, m)) AS s"
            " WHERE kits.kit_id = s.k",
            (kit_ids, [seen_ms[k] for k in kit_ids]),
        )


def record_status(
    conn: psycopg.Connection[Any],
    kit_id: int,
    *,
    received_ms: int,
    status: Mapping[str, Any],
    battery_pct: float | None = None,
    firmware_version: str | None = None,
) -> None:
    """Keep a kit's latest status message (JSON), battery level and firmware version.

    An older message than the one stored is ignored (retained messages replayed).
    """
    with conn.transaction():
        cur = conn.execute(
            "UPDATE kits SET last_status = %s,"
            " last_status_at = timestamptz 'epoch' + %s * interval '1 millisecond',"
            " battery_pct = COALESCE(%s, battery_pct),"
            " firmware_version = COALESCE(%s, firmware_version)"
            " WHERE kit_id = %s AND (last_status_at IS NULL OR"
            "  last_status_at <= timestamptz 'epoch' + %s * interval '1 millisecond')",
            (Jsonb(dict(status)), received_ms, battery_pct, firmware_version, kit_id, received_ms),
        )
        if cur.rowcount == 0 and get_kit(conn, kit_id) is None:
            raise UnknownKitError(f"kit {kit_id} is not registered")


def rotate_master_key(conn: psycopg.Connection[Any], old: MasterKey, new: MasterKey) -> int:
    """Re-encrypt every kit secret under ``new``; returns how many were re-encrypted."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT kit_id, secret_key_id, secret_nonce, secret_ciphertext FROM kits"
            " WHERE secret_key_id = %s FOR UPDATE",
            (old.key_id,),
        ).fetchall()
        for kit_id, key_id, nonce, ct in rows:
            secret = decrypt_secret(old, kit_id, key_id, nonce, ct)
            new_nonce, new_ct = encrypt_secret(new, kit_id, secret)
            conn.execute(
                "UPDATE kits SET secret_key_id = %s, secret_nonce = %s, secret_ciphertext = %s"
                " WHERE kit_id = %s",
                (new.key_id, new_nonce, new_ct, kit_id),
            )
    return len(rows)
