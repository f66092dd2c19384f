"""Accounts and ACLs of the Mosquitto that bikesense starts, kept in step with the kit registry.

The broker has two listeners (:class:`bikesense.services.BrokerAccounts`):

- kits log in on the kit listener with their decimal kit id and the password
  derived from their secret (:func:`ingest.broker_auth.kit_mqtt_password`); the
  ACL lets kit N write ``<root>/kits/N/up`` and ``<root>/kits/N/status`` and read
  nothing. The lines are per user, not a ``pattern``: a revoked kit that is still
  connected loses its write access at the next reload, not only its login.
- ingest logs in on the service listener as ``bikesense-ingest`` with a password
  generated once and kept in the state folder (mode 0600); it may read the kits'
  topics and write nothing.

Password hashes are Mosquitto's own ``$7$`` format (PBKDF2-SHA512, what
``mosquitto_passwd`` writes in 2.0), computed here so no plain password is ever
written to disk. Files are replaced atomically, then the broker is sent SIGHUP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import psycopg

from bikesense.services import (
    BrokerAccounts,
    LocalServices,
    mosquitto_file_owner,
    reload_broker,
)
from bikesense.servicestate import ServiceRecord, pid_alive
from bikesense.settings import SecretSettings, Settings, resolve_mqtt_url
from ingest.broker_auth import acl_text, kit_mqtt_password
from ingest.topics import TopicLayout
from storage.keyfiles import read_or_create_key_text
from storage.kits import MasterKey, active_kit_secrets

INGEST_USER = "bikesense-ingest"
INGEST_PASSWORD_FILE = "mqtt-ingest.password"  # noqa: S105 - a file name, not a password
#: What ``mosquitto_passwd`` 2.0 uses. The passwords are 128 random bits or more,
#: so stretching adds nothing against guessing, and every CONNECT pays for it.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<salt>$<hash>``: Mosquitto 2.0's PBKDF2-SHA512 password hash."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return (
        f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


def password_file_text(credentials: Mapping[str, str]) -> str:
    return "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in credentials.items())


def kit_acl_text(layout: TopicLayout, kit_ids: Iterable[int]) -> str:
    """Each kit writes its own two topics; no kit reads anything."""
    lines = ["# Written by bikesense: each kit writes its own topics and reads nothing.", ""]
    for kit_id in sorted(kit_ids):
        lines += [
            f"user {kit_id}",
            f"topic write {layout.up(kit_id)}",
            f"topic write {layout.status(kit_id)}",
            "",
        ]
    return "\n".join(lines)


def service_acl_text(layout: TopicLayout, readers: Iterable[str]) -> str:
    """The services read every kit's topics and write none."""
    lines = ["# Written by bikesense: ingest reads the kits' topics.", ""]
    for user in readers:
        lines += [
            f"user {user}",
            f"topic read {layout.up_filter()}",
            f"topic read {layout.status_filter()}",
            "",
        ]
    return "\n".join(lines)


def _write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` atomically with a file only its owner can read: ``owner`` (uid, gid),
    else Mosquitto's system user when we run as root, else us."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if owner is None and (user := mosquitto_file_owner()) is not None:
            owner = (user.pw_uid, user.pw_gid)
        if owner is not None:
            os.chown(tmp, *owner)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_kit_accounts(
    accounts: BrokerAccounts,
    kit_secrets: Mapping[int, bytes],
    layout: TopicLayout,
    owner: tuple[int, int] | None = None,
) -> None:
    """The kit listener's password and ACL files for exactly these (active) kits."""
    _write_private(
        accounts.kit_passwords,
        password_file_text({str(k): kit_mqtt_password(s) for k, s in sorted(kit_secrets.items())}),
        owner,
    )
    _write_private(accounts.kit_acl, kit_acl_text(layout, kit_secrets), owner)


def write_service_accounts(
    accounts: BrokerAccounts,
    ingest_password: str,
    layout: TopicLayout,
    owner: tuple[int, int] | None = None,
) -> None:
    _write_private(
        accounts.service_passwords, password_file_text({INGEST_USER: ingest_password}), owner
    )
    _write_private(accounts.service_acl, service_acl_text(layout, [INGEST_USER]), owner)


def write_single_listener_accounts(
    directory: Path,
    kit_secrets: Mapping[int, bytes],
    ingest_password: str,
    layout: TopicLayout,
    owner: tuple[int, int] | None = None,
) -> None:
    """``passwords`` and ``acl`` for a broker with one listener for kits and ingest alike.

    Without ``use_username_as_clientid`` there, a kit can log in with ingest's client id
    and take its session: prefer the two-listener files (:class:`BrokerAccounts`).
    """
    credentials = {str(k): kit_mqtt_password(s) for k, s in sorted(kit_secrets.items())}
    credentials[INGEST_USER] = ingest_password
    _write_private(directory / "passwords", password_file_text(credentials), owner)
    _write_private(directory / "acl", acl_text(layout, {INGEST_USER: "read"}), owner)


def ingest_password_from(settings: Settings) -> str | None:
    """Ingest's password: ``BIKESENSE_MQTT_INGEST_PASSWORD``, else the configured MQTT URL's
    when that logs in as ingest (docker-compose.yml)."""
    given = SecretSettings.text(settings.secrets.mqtt_ingest_password)
    if given:
        return given
    parts = urlsplit(settings.services.mqtt_url or "")
    if parts.username and unquote(parts.username) == INGEST_USER and parts.password:
        return unquote(parts.password)
    return None


def parse_owner(text: str) -> tuple[int, int]:
    """``UID:GID`` (or ``UID``, the group alike) as numbers."""
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise ValueError(f"--owner must be UID:GID in numbers (got {text!r})") from None


def ingest_password(state_dir: Path) -> str:
    """Ingest's password for the embedded broker, made on first use (mode 0600)."""
    return read_or_create_key_text(
        state_dir / INGEST_PASSWORD_FILE, lambda: secrets.token_urlsafe(24)
    ).strip()


def prepare_embedded_accounts(
    state_dir: Path, accounts: BrokerAccounts, layout: TopicLayout | None = None
) -> None:
    """Before ``services up`` starts the broker: ingest's account (always rewritten from the
    password in the state folder) and, the first time, a kit listener with no kit yet."""
    layout = layout or TopicLayout()
    accounts.directory.mkdir(parents=True, exist_ok=True)
    accounts.directory.chmod(0o700)
    write_service_accounts(accounts, ingest_password(state_dir), layout)
    if not accounts.kit_passwords.exists() or not accounts.kit_acl.exists():
        write_kit_accounts(accounts, {}, layout)


def embedded_broker(state_dir: Path) -> ServiceRecord | None:
    """The running broker ``services up`` started with kit accounts, if any."""
    record = LocalServices(state_dir).records().get("mosquitto")
    if record is None or not record.kits_url or not pid_alive(record.pid):
        return None
    return record


def accounts_of(record: ServiceRecord) -> BrokerAccounts:
    return BrokerAccounts(Path(record.directory) / "auth")


def sync_embedded_broker(
    state_dir: Path,
    conn: psycopg.Connection[Any],
    master: MasterKey,
    layout: TopicLayout | None = None,
) -> int | None:
    """Give the embedded broker exactly the registry's active kits, without a restart.

    The files are rewritten whenever ``services up`` has made them in this state folder,
    so a broker started later reads the registry as it is; a running one is sent SIGHUP.
    Returns how many kits may log in, or None when this state folder has no such broker.
    """
    record = embedded_broker(state_dir)
    accounts = (
        accounts_of(record)
        if record is not None
        else BrokerAccounts(state_dir / "mosquitto" / "auth")
    )
    if record is None and not accounts.kit_passwords.exists():
        return None
    kits = active_kit_secrets(conn, master)
    write_kit_accounts(accounts, kits, layout or TopicLayout())
    if record is not None:
        reload_broker(record.pid)
    return len(kits)


def ingest_mqtt_url(settings: Settings) -> str:
    """The broker URL for ingest: the configured one as it is; the embedded broker's
    service listener with ingest's own account added."""
    url = resolve_mqtt_url(settings)
    if settings.services.mqtt_url is not None or urlsplit(url).username:
        return url
    record = embedded_broker(settings.services.state_dir)
    if record is None or record.url != url:
        return url
    password = quote(ingest_password(settings.services.state_dir), safe="")
    return f"mqtt://{INGEST_USER}:{password}@{url.removeprefix('mqtt://')}"


def kit_mqtt_url(kits_url: str, kit_id: int, secret: bytes) -> str:
    """``kits_url`` with kit ``kit_id``'s login (what the simulated fleet uses)."""
    return (
        f"mqtt://{kit_id}:{quote(kit_mqtt_password(secret), safe='')}"
        f"@{kits_url.removeprefix('mqtt://')}"
    )


def reload_embedded_broker(settings: Settings, conn: psycopg.Connection[Any]) -> int | None:
    """After the kit registry changed (``kits add`` / ``kits revoke``): the embedded
    broker's kit accounts rewritten (and reloaded when it runs); None when there is none."""
    # Imported here: the master key's edge helpers live with the storage CLI.
    from storage.cli import master_key_of  # noqa: PLC0415

    if not (settings.services.state_dir / "mosquitto" / "auth").exists():
        return None
    return sync_embedded_broker(settings.services.state_dir, conn, master_key_of(settings))
