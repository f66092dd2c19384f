"""Real services for the tests: one PostgreSQL cluster and one Mosquitto broker per session.

Both start on free loopback ports from the same harness as ``bikesense services
up`` (or come from ``BIKESENSE_DATABASE_URL`` / ``BIKESENSE_MQTT_URL`` when set),
and stop when the session ends. Each test that needs a database gets a fresh
one of its own, so tests never see each other's rows.

``BIKESENSE_TEST_BACKEND=timescale`` runs every database test on TimescaleDB: the
session's server is then ``BIKESENSE_TEST_TIMESCALE_URL`` if set, else a cluster of
the harness started with ``shared_preload_libraries = 'timescaledb'`` (the extension
must be installed in the PostgreSQL the harness runs), and the shared template is
migrated for TimescaleDB. The default, ``plain``, is plain PostgreSQL; the tests of
the TimescaleDB path itself (``timescale_url``) then still run when either kind of
TimescaleDB server is there, and skip saying which is missing otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bikesense.exceptions import ServiceError
from bikesense.kafka.broker import KafkaBroker, KafkaDistribution
from bikesense.services import MosquittoBroker, PostgresCluster, postgres_bindir

#: The fixture that starts (or reaches) each real service, and the markers a test that
#: depends on it carries: the markers follow the fixtures a test uses, directly or
#: through other fixtures, so that ``-m "not postgres"`` starts no PostgreSQL. The
#: harness's TimescaleDB is a PostgreSQL server too.
SERVICE_MARKERS = {
    "pg_cluster": ("postgres",),
    "timescale_cluster": ("postgres", "timescale"),
    "timescale_url": ("timescale",),
    "mqtt_broker": ("mqtt",),
    "kafka_broker": ("kafka",),
}


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, markers in SERVICE_MARKERS.items():
            if fixture not in used:
                continue
            for marker in markers:
                if item.get_closest_marker(marker) is None:
                    item.add_marker(marker)


@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its folders are mode 0700, and when the tests run as
    # root the servers run as the postgres / mosquitto users, who must get in.
    root = Path(tempfile.mkdtemp(prefix="bikesense-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


#: Which backend the shared template and every database test use: plain or timescale.
TEST_BACKEND_ENV = "BIKESENSE_TEST_BACKEND"
TIMESCALE_URL_ENV = "BIKESENSE_TEST_TIMESCALE_URL"


def selected_backend() -> str:
    backend = os.environ.get(TEST_BACKEND_ENV, "plain")
    if backend not in {"plain", "timescale"}:
        raise pytest.UsageError(f"{TEST_BACKEND_ENV} must be plain or timescale (got {backend!r})")
    return backend


def timescale_missing() -> str | None:
    """Why the harness cannot start a TimescaleDB cluster here, or None if it can."""
    try:
        bindir = postgres_bindir()
    except ServiceError as exc:
        return str(exc)
    sharedir = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    control = Path(sharedir) / "extension" / "timescaledb.control"
    if not control.exists():
        return (
            f"no TimescaleDB here: {TIMESCALE_URL_ENV} is not set and the PostgreSQL in "
            f"{bindir} has no timescaledb extension ({control} is missing); "
            "docs/deployment.md says how to test against one"
        )
    return None


def start_timescale_cluster(directory: Path) -> PostgresCluster:
    """A harness cluster with TimescaleDB preloaded and its telemetry off."""
    cluster = PostgresCluster(directory, durable=False)
    cluster.start()  # the first start runs initdb
    cluster.stop()
    # Server settings the harness does not pass: into the cluster's own configuration
    # file, before the server first loads TimescaleDB (so telemetry is never on). No
    # background scheduler: it would hold a connection to the template databases the
    # tests clone (CREATE DATABASE ... TEMPLATE refuses a database in use), and the
    # tests run the policies they mean to with CALL run_job(...).
    with (cluster.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "shared_preload_libraries = 'timescaledb'\n"
            "timescaledb.telemetry_level = off\n"
            "timescaledb.max_background_workers = 0\n"
        )
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def timescale_cluster(services_root: Path) -> Iterator[PostgresCluster | None]:
    """A TimescaleDB cluster of the harness, or None when BIKESENSE_TEST_TIMESCALE_URL
    names a server; skips when neither is possible."""
    if os.environ.get(TIMESCALE_URL_ENV):
        yield None
        return
    missing = timescale_missing()
    if missing is not None:
        pytest.skip(missing)
    cluster = start_timescale_cluster(services_root / "timescale")
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def pg_cluster(
    request: pytest.FixtureRequest, services_root: Path
) -> Iterator[PostgresCluster | None]:
    """The harness's own cluster, or None when BIKESENSE_DATABASE_URL points elsewhere
    (or, for BIKESENSE_TEST_BACKEND=timescale, BIKESENSE_TEST_TIMESCALE_URL)."""
    if selected_backend() == "timescale":
        if not os.environ.get(TIMESCALE_URL_ENV) and (missing := timescale_missing()):
            pytest.fail(f"{TEST_BACKEND_ENV}=timescale, but {missing}")
        cluster: PostgresCluster | None = request.getfixturevalue("timescale_cluster")
        yield cluster
        return
    if os.environ.get("BIKESENSE_DATABASE_URL"):
        yield None
        return
    cluster = PostgresCluster(services_root / "postgres", durable=False)
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def postgres_url(pg_cluster: PostgresCluster | None) -> str:
    """The maintenance database of the test server; create databases from it, don't fill it."""
    if pg_cluster is not None:
        return pg_cluster.url
    if selected_backend() == "timescale":
        return os.environ[TIMESCALE_URL_ENV]
    return os.environ["BIKESENSE_DATABASE_URL"]


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database for this test alone, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(postgres_url, name)
    yield url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def mqtt_broker(services_root: Path) -> Iterator[MosquittoBroker | None]:
    """The harness's own broker, or None when BIKESENSE_MQTT_URL points elsewhere."""
    if os.environ.get("BIKESENSE_MQTT_URL"):
        yield None
        return
    broker = MosquittoBroker(services_root / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mqtt_url(mqtt_broker: MosquittoBroker | None) -> str:
    if mqtt_broker is None:
        return os.environ["BIKESENSE_MQTT_URL"]
    return mqtt_broker.url


@pytest.fixture
def unique_topic_prefix() -> str:
    """A topic root no other test publishes under, so tests can share one broker."""
    return f"test-{uuid.uuid4().hex[:10]}"


#: Set by .ci/run: CI must prove the distributed path, so a Kafka test may not skip there.
REQUIRE_KAFKA = os.environ.get("BIKESENSE_REQUIRE_KAFKA") == "1"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_broker(services_root: Path) -> Iterator[KafkaBroker | None]:
    """The harness's own Kafka broker (once per session), or None when
    BIKESENSE_TEST_KAFKA_URL points elsewhere.

    Its jars come from the cache ``bikesense services up --kafka`` fills (the
    project's ``.state/kafka-dist``, or BIKESENSE_KAFKA_CACHE_DIR): the first
    session on a machine downloads them from Maven Central.
    """
    if os.environ.get("BIKESENSE_TEST_KAFKA_URL"):
        yield None
        return
    cache = Path(os.environ.get("BIKESENSE_KAFKA_CACHE_DIR") or ROOT / ".state" / "kafka-dist")
    broker = KafkaBroker(services_root / "kafka", KafkaDistribution(cache))
    try:
        broker.start()
    except ServiceError as exc:
        broker.stop()
        if REQUIRE_KAFKA:
            pytest.fail(f"BIKESENSE_REQUIRE_KAFKA=1 but no Kafka broker could start: {exc}")
        pytest.skip(f"no Kafka broker could start here: {exc}")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_url(kafka_broker: KafkaBroker | None) -> str:
    if kafka_broker is None:
        return os.environ["BIKESENSE_TEST_KAFKA_URL"]
    return kafka_broker.url


@pytest.fixture(scope="session")
def timescale_url(timescale_cluster: PostgresCluster | None) -> str:
    """A TimescaleDB server's maintenance database: BIKESENSE_TEST_TIMESCALE_URL, else the
    harness's TimescaleDB cluster (skipped, with the reason, when neither is there)."""
    if timescale_cluster is None:
        return os.environ[TIMESCALE_URL_ENV]
    return timescale_cluster.url


# --- storage: migrated databases (owned by storage/, issue 4) -------------------------------


@pytest.fixture(scope="session")
def migrated_template(postgres_url: str) -> Iterator[str]:
    """Name of a database migrated once per session, cloned by ``migrated_database_url``."""
    from storage.migrate import Backend, migrate  # noqa: PLC0415 - only sessions that need it

    name = f"template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(_with_database(postgres_url, name), autocommit=True) as conn:
        if selected_backend() == "timescale":
            migrate(conn, backend=Backend.TIMESCALE)
            unschedule_timescale_jobs(conn)
        else:
            migrate(conn, backend=Backend.PLAIN)
    yield name
    _drop_database(postgres_url, name)


@pytest.fixture
def migrated_database_url(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """A new database with every migration applied (plain PostgreSQL, or TimescaleDB under
    BIKESENSE_TEST_BACKEND=timescale), dropped afterwards."""
    with cloned_database(postgres_url, migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
def plain_template(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """A template migrated for plain PostgreSQL whatever BIKESENSE_TEST_BACKEND says: the
    shared one, or under the TimescaleDB switch one of its own on the same server."""
    if selected_backend() == "plain":
        yield migrated_template
        return
    from storage.migrate import Backend, migrate  # noqa: PLC0415 - only sessions that need it

    name = f"template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(_with_database(postgres_url, name), autocommit=True) as conn:
        migrate(conn, backend=Backend.PLAIN)
    yield name
    _drop_database(postgres_url, name)


@pytest.fixture
def plain_database_url(postgres_url: str, plain_template: str) -> Iterator[str]:
    """A new database migrated for plain PostgreSQL (native partitions), for the tests
    of that backend's own mechanics; dropped afterwards."""
    with cloned_database(postgres_url, plain_template) as url:
        yield url


@pytest.fixture
def timescale_database_url(timescale_url: str) -> Iterator[str]:
    """A new database migrated for TimescaleDB, its policies unscheduled, dropped afterwards;
    skipped where there is no TimescaleDB (see ``timescale_url``)."""
    from storage.migrate import Backend, migrate  # noqa: PLC0415 - only sessions that need it

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(timescale_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, backend=Backend.TIMESCALE)
            unschedule_timescale_jobs(conn)
        yield url
    finally:
        _drop_database(timescale_url, name)


@contextmanager
def cloned_database(postgres_url: str, template: str) -> Iterator[str]:
    """A new database cloned from ``template`` for the block, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield _with_database(postgres_url, name)
    finally:
        _drop_database(postgres_url, name)


def _drop_database(postgres_url: str, name: str) -> None:
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(drop)


def unschedule_timescale_jobs(conn: psycopg.Connection[Any]) -> None:
    """Stop TimescaleDB's scheduler from running this database's policies by itself.

    The policies act on chunks by their age on the server's clock: left to the
    scheduler, they would drop or compress the tests' fixed days whenever those are
    old enough. Tests that mean to run a policy run it with ``CALL run_job(...)``.
    """
    conn.execute(
        "SELECT alter_job(job_id, scheduled => false)"
        " FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
    )
