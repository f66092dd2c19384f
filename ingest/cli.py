"""``bikesense ingest`` and ``bikesense kits ...``."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from bikesense.brokerauth import ingest_mqtt_url, reload_embedded_broker
from bikesense.cliutil import connect_or_exit, exit_with, settings_or_exit
from bikesense.defaults import AGGREGATE_DELAY_S
from bikesense.exceptions import BikesenseError
from bikesense.settings import resolve_database_url
from ingest.broker_auth import kit_mqtt_password
from ingest.exceptions import IngestError
from ingest.topics import DEFAULT_SHARE_GROUP, TopicLayout
from storage.cli import master_key_of
from storage.kits import kit_secrets, list_kits, register_kit, revoke_kit

kits_app = typer.Typer(
    help="Register, list and revoke sensor kits; broker credentials.", no_args_is_help=True
)
console = Console()


@kits_app.command("add")
def kits_add(
    kit_id: Annotated[int, typer.Argument(min=0, max=2**32 - 1, help="The kit's 32-bit id.")],
    pseudonym: Annotated[str | None, typer.Option(help="Public name (random if omitted).")] = None,
) -> None:
    """Register a kit; prints its secret and MQTT password once, to flash into the kit."""
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            creds = register_kit(conn, master_key_of(settings), kit_id, pseudonym)
            broker_kits = reload_embedded_broker(settings, conn)
        except BikesenseError as exc:
            exit_with(exc)
    console.print(f"kit {creds.kit_id} registered as {creds.pseudonym}")
    if broker_kits is not None:
        console.print(f"the local broker now lets {broker_kits} kits log in")
    typer.echo(f"secret: {creds.secret.hex()}")
    typer.echo(f"mqtt user: {creds.kit_id}")
    typer.echo(f"mqtt password: {kit_mqtt_password(creds.secret)}")


@kits_app.command("list")
def kits_list() -> None:
    """The registered kits, without secrets."""
    with connect_or_exit() as conn:
        kits = list_kits(conn)
    table = Table("kit", "pseudonym", "status", "last seen", "battery %", "firmware")
    for k in kits:
        table.add_row(
            str(k.kit_id),
            k.pseudonym,
            k.status,
            k.last_seen_at.isoformat(timespec="seconds") if k.last_seen_at else "never",
            f"{k.battery_pct:.0f}" if k.battery_pct is not None else "",
            k.firmware_version or "",
        )
    console.print(table)


@kits_app.command("revoke")
def kits_revoke(kit_id: Annotated[int, typer.Argument(help="The kit's id.")]) -> None:
    """Stop accepting a kit's frames (takes effect in ingest within 30 s; the local broker
    started by `services up` refuses its login and disconnects it at once)."""
    settings = settings_or_exit()
    with connect_or_exit(settings) as conn:
        try:
            changed = revoke_kit(conn, kit_id)
            reload_embedded_broker(settings, conn)
        except BikesenseError as exc:
            exit_with(exc)
    console.print(f"kit {kit_id} {'revoked' if changed else 'was already revoked'}")


@kits_app.command("broker-acl")
def kits_broker_acl(
    out: Annotated[Path, typer.Option(help="Folder for the password and ACL files.")] = Path(
        "deploy/mosquitto"
    ),
    ingest_password: Annotated[
        str,
        typer.Option(
            help="Password of the ingest service user (default: BIKESENSE_MQTT_INGEST_PASSWORD, "
            "else the one in BIKESENSE_MQTT_URL when that logs in as bikesense-ingest).",
        ),
    ] = "",
    topic_root: Annotated[str, typer.Option(help="Topic root.")] = TopicLayout().root,
    owner: Annotated[
        str | None,
        typer.Option(
            help="UID:GID to own the files (the broker's user; 1883:1883 in eclipse-mosquitto)."
        ),
    ] = None,
) -> None:
    """Write Mosquitto password and ACL files: each kit may publish only to its own topics.

    kits.passwords / kits.acl and services.passwords / services.acl are for a broker with a
    kit listener and an ingest listener (deploy/mosquitto.conf); passwords / acl for one
    listener. Send the broker SIGHUP afterwards: it re-reads them without a restart.
    """
    from bikesense.brokerauth import (  # noqa: PLC0415
        ingest_password_from,
        parse_owner,
        write_kit_accounts,
        write_service_accounts,
        write_single_listener_accounts,
    )
    from bikesense.services import BrokerAccounts  # noqa: PLC0415

    settings = settings_or_exit()
    ingest_password = ingest_password or ingest_password_from(settings) or ""
    if not ingest_password:
        exit_with(IngestError("set --ingest-password or BIKESENSE_MQTT_INGEST_PASSWORD"), 2)
    try:
        file_owner = parse_owner(owner) if owner else None
    except ValueError as exc:
        exit_with(exc, 2)
    with connect_or_exit(settings) as conn:
        secrets = kit_secrets(conn, master_key_of(settings))
    active = {k: s.secret for k, s in secrets.items() if s.active}
    layout = TopicLayout(topic_root)
    accounts = BrokerAccounts(out)
    write_kit_accounts(accounts, active, layout, file_owner)
    write_service_accounts(accounts, ingest_password, layout, file_owner)
    write_single_listener_accounts(out, active, ingest_password, layout, file_owner)
    console.print(
        f"wrote the broker's accounts for {len(active)} kits and ingest in {out}; "
        "send the broker SIGHUP to load them (docs/deployment.md)"
    )


@kits_app.command("pseudonym")
def kits_pseudonym(
    kit_ids: Annotated[
        list[int] | None, typer.Argument(help="Kit ids (default: every registered kit).")
    ] = None,
    day: Annotated[
        str | None,
        typer.Option(help="Local day, YYYY-MM-DD (default: today in the deployment's time zone)."),
    ] = None,
    find: Annotated[
        str | None, typer.Option(help="Show only the kit behind this pseudonym.")
    ] = None,
) -> None:
    """Admins only: the daily pseudonyms researchers see, mapped back to kits (docs/privacy.md).

    Needs the pseudonym key (BIKESENSE_PSEUDONYM_KEY, ..._FILE, or the state folder's).
    """
    from datetime import date, datetime  # noqa: PLC0415
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from storage.cli import pseudonym_key_of  # noqa: PLC0415
    from storage.pseudonyms import pseudonym_table  # noqa: PLC0415

    settings = settings_or_exit()
    try:
        when = (
            date.fromisoformat(day)
            if day
            else datetime.now(ZoneInfo(settings.privacy.day_tz)).date()
        )
    except ValueError:
        exit_with(ValueError(f"--day must be YYYY-MM-DD (got {day!r})"), 2)
    if not kit_ids:
        with connect_or_exit(settings) as conn:
            kit_ids = [k.kit_id for k in list_kits(conn)]
    try:
        key = pseudonym_key_of(settings)
    except (BikesenseError, OSError) as exc:
        exit_with(exc)
    rows = [r for r in pseudonym_table(kit_ids, when, key) if find is None or find == r[1]]
    table = Table("kit", f"pseudonym on {when.isoformat()}")
    for kit, name in rows:
        table.add_row(str(kit), name)
    console.print(table)


class Destination(StrEnum):
    DATABASE = "database"
    KAFKA = "kafka"


def ingest_command(
    to: Annotated[
        Destination,
        typer.Option(
            help="database: the embedded runtime (ingest, stream core and storage in this "
            "process); "
            "kafka: produce admitted readings for the faust workers."
        ),
    ] = Destination.DATABASE,
    client_id: Annotated[
        str | None,
        typer.Option(help="MQTT client id; keep it stable across restarts (persistent session)."),
    ] = None,
    share_group: Annotated[
        str,
        typer.Option(
            help="Shared subscription group, so several ingest processes split the kits' messages; "
            "'' for a plain subscription (one process; survives a broker restart whole, "
            "see docs/ingest.md)."
        ),
    ] = DEFAULT_SHARE_GROUP,
    topic_root: Annotated[str, typer.Option(help="Topic root.")] = TopicLayout().root,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics of this process on 127.0.0.1:PORT/metrics."),
    ] = None,
    writers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Batches written to the database at once, each on its own connection "
            "(a second only under load; acks stay in arrival order; see "
            "docs/stream.md).",
        ),
    ] = 2,
    batch_wait: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds a batch may wait for a second writer while another batch is "
            "written, before it is taken though not full: the latency bound at a "
            "steady rate (docs/stream.md).",
        ),
    ] = 0.5,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most MQTT messages in one batch (one transaction): bigger batches share "
            "more aggregate rows per reading under load (docs/stream.md).",
        ),
    ] = 1000,
    aggregate_delay: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds a batch's aggregates may wait to be merged with later batches' "
            "(fewer partial rows per reading; the readings are stored at once; 0: every "
            "batch merges its own; 30-60 halves the database's CPU for a large fleet in "
            "real time, the map's aggregates lagging that much; docs/storage.md).",
        ),
    ] = AGGREGATE_DELAY_S,
) -> None:
    """Take kit frames from MQTT; store them (default) or hand them to Kafka."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_or_exit()
    name = client_id or f"bikesense-ingest-{socket.gethostname()}-{os.getuid()}"
    try:
        from bikesense.runtimes import (  # noqa: PLC0415
            EmbeddedConfig,
            run_embedded,
            run_kafka_ingest,
        )
        from stream.maintenance import MaintenanceConfig  # noqa: PLC0415
        from stream.settings import core_config  # noqa: PLC0415

        # One configuration for both destinations: retention runs from either process.
        config = EmbeddedConfig(
            mqtt_url=ingest_mqtt_url(settings),
            database_url=resolve_database_url(settings),
            client_id=name,
            share_group=share_group,
            topic_root=topic_root,
            writers=writers,
            batch_wait_s=batch_wait,
            max_batch_messages=max_batch,
            aggregate_delay_s=aggregate_delay,
            core=core_config(settings),
            maintenance=MaintenanceConfig(
                raw_retention=timedelta(days=settings.privacy.raw_retention_days)
            ),
        )
        _require_migrated(config.database_url)
        if to is Destination.KAFKA:
            run_kafka_ingest(settings, config, metrics_port)
        else:
            run_embedded(config, master_key_of(settings), metrics_port)
    except BikesenseError as exc:
        exit_with(exc)


def _require_migrated(database_url: str) -> None:
    """Refuse to start on a database without the current schema; a database that is
    away is left to the runtime, which waits for it."""
    from storage.migrate import require_migrated  # noqa: PLC0415

    try:
        conn = psycopg.connect(database_url, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError:
        return
    with conn:
        require_migrated(conn)
