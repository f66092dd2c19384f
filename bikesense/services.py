"""The embedded default: throwaway PostgreSQL and Mosquitto on loopback.

``bikesense services up`` and the pytest fixtures both use these classes. Each
service lives in its own folder (cluster data, config, log, socket) and listens
on a free port on 127.0.0.1 only. When the process runs as root, the servers
run as the ``postgres`` / ``mosquitto`` system users: PostgreSQL refuses to run
as root, and a broker has no business doing so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from bikesense.exceptions import ServiceError
from bikesense.servicestate import (
    RECORD_FILE,
    ServiceRecord,
    pid_alive,
    read_records,
    write_records,
)
from bikesense.settings import Settings
from ingest.limits import MAX_PACKET_BYTES

log = logging.getLogger(__name__)

#: Mosquitto silently drops QoS 1 messages queued beyond ``max_queued_messages``
#: (default 1000) for a subscriber that falls behind: docs/design.md records 16,671
#: of 200,000 lost. The bound stays, but at a size a real backlog fits in
#: (a kit fleet's hours offline), and it is also capped in bytes.
MQTT_MAX_QUEUED_MESSAGES = 1_000_000
MQTT_MAX_QUEUED_BYTES = 2 * 1024**3

#: How long ``services up`` waits for a crashed service's recorded port to be free again
#: (orphaned PostgreSQL backends exit within a second or two of their postmaster).
PORT_REUSE_WAIT_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    what: str,
    log_file: Path | None = None,
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"{what} exited with code {process.returncode}{log_tail(log_file)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServiceError(
        f"{what} did not accept connections on 127.0.0.1:{port} "
        f"within {timeout_s:.0f} s{log_tail(log_file)}"
    )


def log_tail(log_file: Path | None, lines: int = 15) -> str:
    if log_file is None or not log_file.exists():
        return ""
    tail = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_file} ---\n" + "\n".join(tail)


def _service_user(name: str) -> pwd.struct_passwd | None:
    """The unprivileged account to run a server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise ServiceError(
            f"running as root, but there is no '{name}' system user to run the server as; "
            f"install the Debian package that creates it (apt-get install {name_to_package(name)})"
        ) from exc


def name_to_package(user: str) -> str:
    return {"postgres": "postgresql-15", "mosquitto": "mosquitto"}.get(user, user)


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(Path(root) / name, user.pw_uid, user.pw_gid)


def postgres_bindir(configured: Path | None = None) -> Path:
    """The PostgreSQL server binaries: ``configured`` (``BIKESENSE_PG_BINDIR``), else the
    newest Debian one."""
    candidates = (
        [Path(configured)]
        if configured
        else sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for bindir in candidates:
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    raise ServiceError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); "
        "install them with: apt-get install postgresql-15  (or set BIKESENSE_PG_BINDIR)"
    )


def mosquitto_binary() -> Path:
    found = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise ServiceError(
            "the Mosquitto broker is not installed; install it with: apt-get install mosquitto"
        )
    return Path(found)


class PostgresCluster:
    """A PostgreSQL cluster of our own, on a free loopback port.

    ``durable=False`` turns off fsync for test speed (a machine crash could
    corrupt it; a server crash cannot); the demo keeps it on.
    """

    database = "bikesense"
    superuser = "bikesense"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        durable: bool = True,
        bindir: Path | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "run"
        self.log_file = self.directory / "postgres.log"
        self.port = port or free_port()
        self.durable = durable
        self._user = _service_user("postgres")
        self._bindir = postgres_bindir(bindir)

    @property
    def url(self) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self._bindir / args[0]), *args[1:]]
        result = subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
            cmd,
            capture_output=True,
            text=True,
            check=False,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            cwd="/",
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n"
                f"{result.stderr.strip()}{log_tail(self.log_file)}"
            )
        return result

    def start(self) -> ServiceRecord:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_tree(self.directory, self._user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.superuser,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.socket_dir}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            "-c max_wal_size=2GB",
            "-c log_min_messages=warning",
        ]
        if not self.durable:
            # Survives a crash of PostgreSQL (the OS still has the pages), not of the machine.
            # synchronous_commit stays on: a commit the stream acked must survive a kill -9.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._start_server(options)
        wait_for_port(self.port, timeout_s=30, what="PostgreSQL", log_file=self.log_file)
        exists = self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.superuser,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
        )
        if exists.stdout.strip() != "1":
            self._run(
                "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                self.database,
            )
        return ServiceRecord(
            "postgres", self.url, self.pid(), self.port, str(self.directory), str(self.log_file)
        )

    def _start_server(self, options: list[str]) -> None:
        # After a kill -9 of the postmaster its backends live on until they notice (at
        # their next wait, well under a second when idle); until then the old shared
        # memory is in use and the new postmaster refuses to start. Try again for a while.
        deadline = time.monotonic() + PORT_REUSE_WAIT_S
        while True:
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    " ".join(options),
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                return
            except ServiceError as exc:
                # "pre-existing shared memory block (key …, ID …) is still in use"
                if "still in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def pid(self) -> int:
        pid_file = self.data_dir / "postmaster.pid"
        return int(pid_file.read_text().split()[0]) if pid_file.exists() else 0

    def stop(self, *, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """Crash the server (SIGKILL to the postmaster), for fault tests."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class BrokerAccounts:
    """The password and ACL files of a broker that keeps kits and services apart.

    Two listeners, each with files of its own (``per_listener_settings true``):
    kits log in on one, as their decimal kit id, with ``use_username_as_clientid``
    so that no kit can take another client's id or persistent session; the
    services (ingest) log in on the other, whose password file holds no kit, and
    choose their own client ids (several ingest processes share a subscription).
    Mosquitto 2.0 re-reads all four files on SIGHUP (mosquitto.conf(5): "Reloaded
    on reload signal"), so kits are added and revoked without a restart.
    ``bikesense.brokerauth`` writes them.
    """

    directory: Path

    @property
    def kit_passwords(self) -> Path:
        return self.directory / "kits.passwords"

    @property
    def kit_acl(self) -> Path:
        return self.directory / "kits.acl"

    @property
    def service_passwords(self) -> Path:
        return self.directory / "services.passwords"

    @property
    def service_acl(self) -> Path:
        return self.directory / "services.acl"

    def files(self) -> tuple[Path, Path, Path, Path]:
        return self.kit_passwords, self.kit_acl, self.service_passwords, self.service_acl


class MosquittoBroker:
    """A Mosquitto broker of our own on a free loopback port, with deliberate queue limits.

    ``accounts`` makes it refuse anonymous clients: kits on ``port``, services
    on ``service_port`` (see :class:`BrokerAccounts`), each listener with its
    own password and ACL file, which must exist before :meth:`start`.
    ``password_file`` / ``acl_file`` instead put one set of accounts on one
    listener (the files ``bikesense kits broker-acl`` writes). With neither the
    broker is anonymous: only the tests' shared broker, on loopback.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        accounts: BrokerAccounts | None = None,
        service_port: int | None = None,
        daemon: bool = False,
        max_packet_bytes: int | None = MAX_PACKET_BYTES,
    ) -> None:
        """``max_packet_bytes=None`` lifts the packet limit: only for tests of what ingest
        does behind a broker configured without it."""
        self.directory = directory.resolve()
        self.max_packet_bytes = max_packet_bytes
        self.daemon = daemon
        self.pid_file = self.directory / "mosquitto.pid"
        self.port = port or free_port()
        self.accounts = accounts
        self.service_port = (service_port or free_port()) if accounts else None
        self.config_file = self.directory / "mosquitto.conf"
        self.log_file = self.directory / "mosquitto.log"
        self.persistence_dir = self.directory / "persistence"
        self.password_file = password_file
        self.acl_file = acl_file
        self._user = _service_user("mosquitto")
        self._binary = mosquitto_binary()
        self._process: subprocess.Popen[bytes] | None = None
        self._pid = 0

    @property
    def url(self) -> str:
        """Where ingest connects: the service listener when there is one."""
        return f"mqtt://127.0.0.1:{self.service_port or self.port}"

    @property
    def kits_url(self) -> str:
        """Where kits connect."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _listener_lines(self) -> list[str]:
        if self.accounts is None:
            lines = [
                f"listener {self.port} 127.0.0.1",
                f"allow_anonymous {'false' if self.password_file else 'true'}",
            ]
            if self.password_file:
                lines.append(f"password_file {self.password_file}")
            if self.acl_file:
                lines.append(f"acl_file {self.acl_file}")
            return lines
        a = self.accounts
        return [
            "per_listener_settings true",
            "# Kits: the client id is the user name, so no kit takes another's id or session.",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            "use_username_as_clientid true",
            f"password_file {a.kit_passwords}",
            f"acl_file {a.kit_acl}",
            "# Services (ingest): no kit account here; client ids of their own.",
            f"listener {self.service_port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {a.service_passwords}",
            f"acl_file {a.service_acl}",
        ]

    def config_text(self) -> str:
        lines = [
            "# Written by bikesense; see docs/deployment.md for each setting.",
            *self._listener_lines(),
            # Persistent sessions survive a broker restart with their queued QoS 1 messages.
            "persistence true",
            f"persistence_location {self.persistence_dir}/",
            "autosave_interval 5",
            # Deliberate, large bounds instead of the silent default of 1000 (docs/design.md).
            f"max_queued_messages {MQTT_MAX_QUEUED_MESSAGES}",
            f"max_queued_bytes {MQTT_MAX_QUEUED_BYTES}",
            "max_inflight_messages 100",
            "persistent_client_expiration 14d",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
        ]
        if self.max_packet_bytes is not None:
            # No kit message is larger than the protocol's largest frame (ingest/limits.py):
            # a client sending a bigger packet is disconnected, its message never acked.
            lines.append(f"max_packet_size {self.max_packet_bytes}")
        if self._user is not None:
            lines.append(f"user {self._user.pw_name}")
        if self.daemon:
            lines.append(f"pid_file {self.pid_file}")
        return "\n".join(lines) + "\n"

    def start(self) -> ServiceRecord:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        self.persistence_dir.mkdir(exist_ok=True)
        if self.accounts is not None:
            missing = [str(f) for f in self.accounts.files() if not f.exists()]
            if missing:
                raise ServiceError(
                    f"Mosquitto's account files are missing: {', '.join(missing)}"
                    " (bikesense.brokerauth writes them)"
                )
        self.config_file.write_text(self.config_text())
        self.log_file.touch()
        _chown_tree(self.directory, self._user)
        if self.daemon:
            # Outlives this process (`bikesense services up`): mosquitto forks itself away.
            subprocess.run(  # noqa: S603 - fixed binary, our own config
                [str(self._binary), "-c", str(self.config_file), "-d"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=True,
                cwd="/",
                timeout=30,
            )
            wait_for_port(self.port, timeout_s=15, what="Mosquitto", log_file=self.log_file)
            pid = int(self.pid_file.read_text().strip())
        else:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
                [str(self._binary), "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
            wait_for_port(
                self.port,
                timeout_s=15,
                process=self._process,
                what="Mosquitto",
                log_file=self.log_file,
            )
            pid = self._process.pid
        if self.service_port is not None:
            wait_for_port(
                self.service_port,
                timeout_s=15,
                what="Mosquitto's service listener",
                log_file=self.log_file,
            )
        self._pid = pid
        return ServiceRecord(
            "mosquitto",
            self.url,
            pid,
            self.service_port or self.port,
            str(self.directory),
            str(self.log_file),
            kits_url=self.kits_url if self.accounts else "",
        )

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (mosquitto(8))."""
        reload_broker(self._pid)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL), for fault tests; a daemon one too."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
        elif self._pid and pid_alive(self._pid):
            os.kill(self._pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(self._pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def reload_broker(pid: int) -> None:
    """Ask the Mosquitto with ``pid`` to re-read its password and ACL files."""
    if not pid_alive(pid):
        raise ServiceError(f"no Mosquitto runs as process {pid} to reload")
    os.kill(pid, signal.SIGHUP)


def mosquitto_file_owner() -> pwd.struct_passwd | None:
    """Who must own the files a root-started Mosquitto reads (None: whoever we are)."""
    return _service_user("mosquitto")


class LocalServices:
    """``bikesense services up/down/status``: the embedded default, recorded in a state folder."""

    def __init__(
        self,
        state_dir: Path,
        *,
        pg_bindir: Path | None = None,
        kafka_cache_dir: Path | None = None,
    ) -> None:
        """``pg_bindir`` and ``kafka_cache_dir``: the settings' (``BIKESENSE_PG_BINDIR``,
        ``BIKESENSE_KAFKA_CACHE_DIR``), or found and kept in the state folder."""
        self.state_dir = state_dir.resolve()
        self.record_file = self.state_dir / RECORD_FILE
        self._pg_bindir = pg_bindir
        self._kafka_cache_dir = kafka_cache_dir

    def records(self) -> dict[str, ServiceRecord]:
        return read_records(self.state_dir)

    def _save(self, records: dict[str, ServiceRecord]) -> None:
        write_records(self.state_dir, records)

    def status(self) -> dict[str, tuple[ServiceRecord, bool]]:
        """Each recorded service with whether its process is alive and its port answers."""
        result = {}
        for name, record in self.records().items():
            alive = pid_alive(record.pid)
            if alive:
                try:
                    wait_for_port(record.port, timeout_s=0.5, what=name)
                except ServiceError:
                    alive = False
            result[name] = (record, alive)
        return result

    def up(
        self,
        *,
        start_postgres: bool = True,
        start_mosquitto: bool = True,
        start_kafka: bool = False,
    ) -> dict[str, ServiceRecord]:
        """Start what is not running. A service that ran before (crashed, killed, or the
        machine rebooted) comes back on the ports recorded for it: ingest and the API
        hold those URLs and reconnect by themselves once something answers there."""
        # What ran before, read once: saving a restarted service rewrites the record.
        recorded = self.records()
        records = {n: r for n, (r, alive) in self.status().items() if alive}
        anonymous = records.get("mosquitto")
        if start_mosquitto and anonymous is not None and not anonymous.kits_url:
            # An anonymous broker that an older bikesense left running: replaced by one
            # with accounts (its persistent sessions are kept in the same folder).
            _terminate(anonymous.pid)
            del records["mosquitto"]
        if start_postgres and "postgres" not in records:
            old = recorded.get("postgres")
            cluster = PostgresCluster(
                self.state_dir / "postgres",
                port=_recorded_port(old.port if old else None, "postgres"),
                bindir=self._pg_bindir,
            )
            records["postgres"] = cluster.start()
            self._save(records)
        if start_mosquitto and "mosquitto" not in records:
            # Imported here: it reaches up to the kit registry, which the tests' brokers
            # and the API never need.
            from bikesense.brokerauth import prepare_embedded_accounts  # noqa: PLC0415

            old = recorded.get("mosquitto")
            kits_port = urlsplit(old.kits_url).port if old and old.kits_url else None
            directory = self.state_dir / "mosquitto"
            accounts = BrokerAccounts(directory / "auth")
            prepare_embedded_accounts(self.state_dir, accounts)
            broker = MosquittoBroker(
                directory,
                daemon=True,
                accounts=accounts,
                port=_recorded_port(kits_port, "mosquitto (kits)"),
                service_port=_recorded_port(
                    old.port if old and old.kits_url else None, "mosquitto (ingest)"
                ),
            )
            records["mosquitto"] = broker.start()
            self._save(records)
        if start_kafka and "kafka" not in records:
            from bikesense.kafka.broker import (  # noqa: PLC0415 - only when Kafka is asked for
                KafkaBroker,
                KafkaDistribution,
            )

            old = recorded.get("kafka")
            kafka = KafkaBroker(
                self.state_dir / "kafka",
                KafkaDistribution(self.kafka_cache_dir()),
                port=_recorded_port(old.port if old else None, "kafka"),
            )
            records["kafka"] = kafka.start()
            kafka.detach()
            self._save(records)
        return records

    def watch(
        self,
        stop: threading.Event,
        *,
        interval_s: float = 2.0,
        start_postgres: bool = True,
        start_mosquitto: bool = True,
        start_kafka: bool = False,
        restarted: Callable[[ServiceRecord], None] | None = None,
    ) -> None:
        """Until ``stop`` is set: every ``interval_s``, start again (on its recorded ports,
        :meth:`up`) any service that died, and tell ``restarted`` about it.

        ``bikesense services up --watch`` runs this: the supervisor of the embedded
        services. A restart that fails (a port still taken) is tried again at the next look.
        """
        wanted = {"postgres": start_postgres, "mosquitto": start_mosquitto, "kafka": start_kafka}
        while not stop.wait(interval_s):
            running = {n: r.pid for n, (r, alive) in self.status().items() if alive}
            if all(name in running for name, on in wanted.items() if on):
                continue
            try:
                records = self.up(
                    start_postgres=start_postgres,
                    start_mosquitto=start_mosquitto,
                    start_kafka=start_kafka,
                )
            except ServiceError as exc:
                log.warning(
                    "could not start a service again (next try in %.0f s): %s", interval_s, exc
                )
                continue
            for name, record in records.items():
                if running.get(name) != record.pid and restarted is not None:
                    restarted(record)

    def kafka_cache_dir(self) -> Path:
        """Where Kafka's jars are kept once downloaded (``BIKESENSE_KAFKA_CACHE_DIR`` to share
        them between state folders)."""
        return self._kafka_cache_dir or self.state_dir / "kafka-dist"

    def down(self) -> list[str]:
        stopped = []
        records = self.records()
        postgres = records.get("postgres")
        if postgres is not None:
            cluster = PostgresCluster(
                Path(postgres.directory), port=postgres.port, bindir=self._pg_bindir
            )
            if pid_alive(postgres.pid):
                cluster.stop()
                stopped.append("postgres")
        mosquitto = records.get("mosquitto")
        if mosquitto is not None and pid_alive(mosquitto.pid):
            _terminate(mosquitto.pid)
            stopped.append("mosquitto")
        kafka = records.get("kafka")
        if kafka is not None and pid_alive(kafka.pid):
            from bikesense.kafka.broker import stop_process  # noqa: PLC0415

            stop_process(kafka.pid, timeout_s=60)
            stopped.append("kafka")
        self.record_file.unlink(missing_ok=True)
        return stopped

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> Self:
        return cls(state_dir)


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``pid`` is still there after ``timeout_s``."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _recorded_port(port: int | None, what: str) -> int | None:
    """``port`` once it is free again (None: none recorded, take a free one).

    The record is what ingest and the API were told; starting elsewhere would strand
    them (they reconnect to the URL they hold), so a port that stays taken is an error.
    """
    if port is None:
        return None
    deadline = time.monotonic() + PORT_REUSE_WAIT_S
    while not _port_free(port):
        if time.monotonic() > deadline:
            raise ServiceError(
                f"cannot start {what} again on its recorded port 127.0.0.1:{port}: something "
                f"else listens there; stop it, or run `bikesense services down` to forget the "
                f"recorded ports (processes that hold the old URLs must then be restarted)"
            )
        time.sleep(0.2)
    return port


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as PostgreSQL and
    Mosquitto set it: the connections a killed server leaves in TIME_WAIT do not count
    (without it a crashed service always looked taken and moved to a new port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_services(settings: Settings) -> LocalServices:
    """The embedded services of ``settings``: their state folder and where their binaries are."""
    return LocalServices(
        settings.services.state_dir,
        pg_bindir=settings.services.pg_bindir,
        kafka_cache_dir=settings.services.kafka_cache_dir,
    )
