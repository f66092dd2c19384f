"""Kit registry: secrets encrypted at rest and recoverable with the master key only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.exceptions import KitError, KitExistsError, SecretError, UnknownKitError
from storage.kits import (
    MasterKey,
    active_kit_secrets,
    get_kit,
    kit_secrets,
    list_kits,
    load_or_create_master_key,
    record_status,
    register_kit,
    revoke_kit,
    rotate_master_key,
    touch_last_seen,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(migrated_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def master() -> MasterKey:
    return MasterKey.generate("test1")


def test_register_and_read_back_the_secret(
    conn: psycopg.Connection[Any], master: MasterKey
) -> None:
    creds = register_kit(conn, master, 42, "kit-red-fox")
    assert len(creds.secret) == 32
    assert repr(creds.secret) not in repr(creds)
    stored = conn.execute("SELECT secret_ciphertext FROM kits WHERE kit_id = 42").fetchone()
    assert stored is not None
    assert creds.secret not in bytes(stored[0])  # not in clear
    assert active_kit_secrets(conn, master) == {42: creds.secret}
    other = register_kit(conn, master, 2**32 - 1)
    assert other.pseudonym.startswith("kit-")
    assert other.secret != creds.secret


def test_duplicates_and_bad_ids_are_refused(
    conn: psycopg.Connection[Any], master: MasterKey
) -> None:
    register_kit(conn, master, 1, "a")
    with pytest.raises(KitExistsError, match="kit id"):
        register_kit(conn, master, 1, "b")
    with pytest.raises(KitExistsError, match="pseudonym"):
        register_kit(conn, master, 2, "a")
    with pytest.raises(KitError, match="32-bit"):
        register_kit(conn, master, 2**32, "c")


def test_revoked_kits_are_inactive(conn: psycopg.Connection[Any], master: MasterKey) -> None:
    a = register_kit(conn, master, 1)
    register_kit(conn, master, 2)
    assert revoke_kit(conn, 2)
    assert not revoke_kit(conn, 2)
    with pytest.raises(UnknownKitError):
        revoke_kit(conn, 3)
    secrets = kit_secrets(conn, master)
    assert secrets[1].active
    assert not secrets[2].active
    assert active_kit_secrets(conn, master) == {1: a.secret}
    assert [k.kit_id for k in list_kits(conn, include_revoked=False)] == [1]
    kit2 = get_kit(conn, 2)
    assert kit2 is not None
    assert kit2.status == "revoked"
    assert kit2.revoked_at is not None


def test_wrong_master_key_fails_loudly(conn: psycopg.Connection[Any], master: MasterKey) -> None:
    register_kit(conn, master, 1)
    with pytest.raises(SecretError, match="does not decrypt"):
        kit_secrets(conn, MasterKey("test1", b"\x00" * 32))
    with pytest.raises(SecretError, match="encrypted under master key 'test1'"):
        kit_secrets(conn, MasterKey.generate("other"))


def test_a_ciphertext_moved_to_another_kit_does_not_decrypt(
    conn: psycopg.Connection[Any], master: MasterKey
) -> None:
    register_kit(conn, master, 1)
    register_kit(conn, master, 2)
    conn.execute(
        "UPDATE kits SET (secret_nonce, secret_ciphertext) ="
        " (SELECT secret_nonce, secret_ciphertext FROM kits WHERE kit_id = 1)"
        " WHERE kit_id = 2"
    )
    with pytest.raises(SecretError, match="kit 2"):
        kit_secrets(conn, master)


def test_master_key_rotation(conn: psycopg.Connection[Any], master: MasterKey) -> None:
    creds = register_kit(conn, master, 7)
    new = MasterKey.generate("test2")
    assert rotate_master_key(conn, master, new) == 1
    assert active_kit_secrets(conn, new) == {7: creds.secret}


def test_last_seen_and_status(conn: psycopg.Connection[Any], master: MasterKey) -> None:
    register_kit(conn, master, 1)
    touch_last_seen(conn, {1: 1_795_334_400_000, 99: 1})  # unknown kits are ignored
    touch_last_seen(conn, {1: 1_795_334_000_000})  # older: does not move back
    record_status(
        conn,
        1,
        received_ms=1_795_334_400_000,
        status={"battery_pct": 81, "fw": "1.2"},
        battery_pct=81.0,
        firmware_version="1.2.0",
    )
    record_status(conn, 1, received_ms=1_795_334_300_000, status={"stale": True})
    kit = get_kit(conn, 1)
    assert kit is not None
    assert kit.last_seen_at is not None
    assert int(kit.last_seen_at.timestamp() * 1000) == 1_795_334_400_000
    assert kit.last_status == {"battery_pct": 81, "fw": "1.2"}
    assert (kit.battery_pct, kit.firmware_version) == (81.0, "1.2.0")
    with pytest.raises(UnknownKitError):
        record_status(conn, 5, received_ms=0, status={})


def test_master_key_text_and_file(tmp_path: Path) -> None:
    key = MasterKey.generate("prod-2026")
    assert MasterKey.from_text(key.to_text()) == key
    assert key.key.hex() not in repr(key)
    with pytest.raises(SecretError, match="base64"):
        MasterKey.from_text("k1:not base64!")
    with pytest.raises(SecretError, match="32 bytes"):
        MasterKey.from_text("k1:AAAA")
    path = tmp_path / "keys" / "kit-master.key"
    first = load_or_create_master_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_master_key(path) == first
