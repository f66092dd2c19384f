"""A single-node Apache Kafka broker of our own (KRaft), on loopback.

``bikesense services up --kafka``, ``./run demo --distributed`` and the test
harness run the distributed runtime against it. Nothing of Kafka is in the
repository: :class:`KafkaDistribution` has Maven resolve the release pinned in
``pom.xml`` (beside this file) from Maven Central into a cache folder, once;
:class:`KafkaBroker` formats a KRaft log folder and runs ``kafka.Kafka`` from
those jars with a bounded heap, listening on 127.0.0.1 only.

The broker does not create topics on a first produce (``auto.create.topics.enable
false``): the bikesense topics are created with their partition count by the
runtime that needs them (stream/faust_app/topics.py), so a producer can never
create one with the broker's default count.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bikesense.exceptions import ServiceError
from bikesense.services import free_port, log_tail, wait_for_port
from bikesense.servicestate import ServiceRecord, pid_alive

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.properties"
#: Kafka 4 brokers need Java 17 or newer (KIP-750).
MIN_JAVA = 17
#: The broker's heap: bounded, and enough for the bikesense topics on one machine.
DEFAULT_HEAP_MB = 512
#: Partitions of a topic created without a count (none of bikesense's are) and of the
#: consumer offsets topic (Kafka's default of 50 only slows a one-node broker's first group).
DEFAULT_PARTITIONS = 8
OFFSETS_PARTITIONS = 8


def kafka_version(pom: Path = POM) -> str:
    """The Kafka release the pom pins (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if match is None:
        raise ServiceError(f"{pom} names no <kafka.version>")
    return match[1].strip()


def _java() -> Path:
    java_home = os.environ.get("JAVA_HOME")
    found = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not found or not Path(found).exists():
        raise ServiceError(
            f"Kafka needs Java {MIN_JAVA} or newer, and there is no `java` "
            "here; install it with: apt-get install openjdk-17-jre-headless"
        )
    result = subprocess.run(  # noqa: S603
        [found, "-version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    major = int(match[1]) if match else 0
    if major == 1 and match and match[2]:  # "1.8.0_392" is Java 8
        major = int(match[2])
    if major < MIN_JAVA:
        raise ServiceError(
            f"Kafka needs Java {MIN_JAVA} or newer; {found} is Java {major or '?'}"
            " (set JAVA_HOME to a newer one, or apt-get install "
            "openjdk-17-jre-headless)"
        )
    return Path(found)


def _maven() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise ServiceError(
            "Kafka's jars are resolved from Maven Central with Maven, and there "
            "is no `mvn` here; install it with: apt-get install maven"
        )
    return Path(found)


@dataclass(frozen=True, slots=True)
class KafkaDistribution:
    """The jars of the pinned Kafka release, resolved once into ``cache_dir``.

    The folder is named after the pom's content, so changing the pom resolves
    again and never mixes two releases.
    """

    cache_dir: Path
    pom: Path = POM

    @property
    def version(self) -> str:
        return kafka_version(self.pom)

    @property
    def lib_dir(self) -> Path:
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()[:12]
        return self.cache_dir.resolve() / f"kafka-{self.version}-{digest}" / "libs"

    def resolved(self) -> bool:
        return (self.lib_dir / ".complete").exists()

    def ensure(self) -> Path:
        """The folder of jars, downloading them first if they are not there yet."""
        if self.resolved():
            return self.lib_dir
        maven = _maven()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=self.cache_dir))
        try:
            result = subprocess.run(  # noqa: S603 - fixed binary, our own pom
                [
                    str(maven),
                    "-q",
                    "-B",
                    "-f",
                    str(self.pom),
                    f"-Dmaven.repo.local={self.cache_dir.resolve() / 'm2'}",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={staging}",
                    "-DincludeScope=runtime",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=900,
                cwd=self.cache_dir,
            )
            if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise ServiceError(
                    f"Maven could not resolve Kafka {self.version} from Maven "
                    f"Central (exit {result.returncode}):\n{tail}"
                )
            (staging / ".complete").write_text(self.version + "\n")
            self.lib_dir.parent.mkdir(parents=True, exist_ok=True)
            if not self.resolved():
                shutil.rmtree(self.lib_dir, ignore_errors=True)
                staging.rename(self.lib_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.lib_dir


class KafkaBroker:
    """One KRaft node (broker and controller in one JVM) in ``directory``, on 127.0.0.1.

    The log folder is formatted on the first start and kept: topics, offsets and
    the faust table's changelog survive a restart. ``stop`` is a clean shutdown,
    ``kill`` a crash (SIGKILL), for fault tests.
    """

    def __init__(
        self,
        directory: Path,
        distribution: KafkaDistribution,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        heap_mb: int = DEFAULT_HEAP_MB,
    ) -> None:
        self.directory = directory.resolve()
        self.distribution = distribution
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap_mb = heap_mb
        self.data_dir = self.directory / "data"
        self.config_file = self.directory / "server.properties"
        self.log_file = self.directory / "server.log"
        self.console_file = self.directory / "console.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            "# Written by bikesense (bikesense/kafka/broker.py): one KRaft node on loopback.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            # Topics are created by bikesense with their partition count, never by a produce.
            "auto.create.topics.enable=false",
            f"num.partitions={DEFAULT_PARTITIONS}",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            f"offsets.topic.num.partitions={OFFSETS_PARTITIONS}",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # A lone consumer group need not wait 3 s for members that are not coming.
            "group.initial.rebalance.delay.ms=0",
            # Readings wait at most a week for a worker that is down.
            "log.retention.hours=168",
        ]
        return "\n".join(lines) + "\n"

    def _java_command(
        self, java: Path, libs: Path, main: str, *args: str, heap_mb: int
    ) -> list[str]:
        return [
            str(java),
            f"-Xms{min(128, heap_mb)}m",
            f"-Xmx{heap_mb}m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            f"-Dbikesense.kafka.log={self.log_file}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def start(self) -> ServiceRecord:
        java = _java()
        libs = self.distribution.ensure()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config_text())
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = new_cluster_id()
            result = subprocess.run(  # noqa: S603 - fixed binary, our own arguments
                self._java_command(
                    java,
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(self.config_file),
                    "--ignore-formatted",
                    heap_mb=256,
                ),
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                cwd=self.directory,
            )
            if result.returncode != 0:
                raise ServiceError(
                    f"formatting Kafka's log folder {self.data_dir} failed:\n"
                    f"{(result.stdout + result.stderr).strip()}"
                )
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.console_file.open("ab") as console:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                self._java_command(
                    java, libs, "kafka.Kafka", str(self.config_file), heap_mb=self.heap_mb
                ),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.directory,
            )
        self._wait_started(log_offset)
        return ServiceRecord(
            "kafka", self.url, self._process.pid, self.port, str(self.directory), str(self.log_file)
        )

    def _wait_started(self, log_offset: int, timeout_s: float = 90) -> None:
        assert self._process is not None
        wait_for_port(
            self.port,
            timeout_s=timeout_s,
            process=self._process,
            what="Kafka",
            log_file=self.console_file,
        )
        # The port opens a moment before the broker has joined its own quorum.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceError(
                    f"Kafka exited with code {self._process.returncode}"
                    f"{log_tail(self.log_file)}{log_tail(self.console_file)}"
                )
            if b"Kafka Server started" in _read_from(self.log_file, log_offset):
                return
            time.sleep(0.1)
        raise ServiceError(
            f"Kafka did not finish starting within {timeout_s:.0f} s{log_tail(self.log_file)}"
        )

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    def stop(self, timeout_s: float = 60) -> None:
        """A clean shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout_s``."""
        if self._process is not None:
            stop_process(self._process.pid, timeout_s=timeout_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)
        self._process = None

    def detach(self) -> None:
        """Leave the broker running when this object is gone (``services up``): it runs in a
        session of its own, and ``services down`` stops it by its recorded pid."""
        if self._process is not None:
            # A Popen collected while its child runs warns of a leak; this child is meant
            # to outlive it.
            self._process.returncode = 0
        self._process = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL), for fault tests."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
        self._process = None


def _read_from(path: Path, offset: int) -> bytes:
    if not path.exists():
        return b""
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A new KRaft cluster id: 16 random bytes in URL-safe base64 without padding, as
    ``kafka-storage.sh random-uuid`` prints them, and like Kafka's own ``Uuid.randomUuid``
    never one that starts with "-": the storage tool's argument parser takes such a value
    for an option and refuses to format (one start in 64 failed so)."""
    while True:
        text = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def stop_process(pid: int, *, timeout_s: float) -> None:
    """SIGTERM ``pid``, wait, then SIGKILL if it is still there."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
