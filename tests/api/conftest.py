"""Fixtures of the API tests: a migrated database with a known scenario, apps and keys.

The apps' clock reads ``NOW`` (api_factories), two days after the scenario, whatever
day the tests run on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.deps import get_now
from api.keys import create_key
from api.roles import Role
from bikesense.settings import Settings, load_settings
from storage.pseudonyms import PseudonymKey
from tests.api.api_factories import NOW, RESOLUTIONS, WINDOWS, scenario, write
from tests.api.api_server import ServerThread

#: The researchers' pseudonym key of every test app.
PSEUDONYM_KEY = PseudonymKey(b"test pseudonym key, 32 bytes ..!")
#: The scenario's grid, generous limits for tests that are not about rate limiting.
TEST_SETTINGS: dict[str, Any] = {
    "h3_resolutions": RESOLUTIONS,
    "window_sizes_s": WINDOWS,
    "public_rate_per_s": 10_000.0,
    "public_burst": 10_000,
    "pseudonym_key": PSEUDONYM_KEY.to_text(),
}


@pytest.fixture(scope="session")
def seeded_template(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database holding the scenario, written once per session and cloned."""
    import uuid  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    name = f"apiseed_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(migrated_template)
            )
        )
    base = postgres_url.rpartition("/")[0]
    write(f"{base}/{name}", scenario())
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def seeded_url(postgres_url: str, seeded_template: str) -> Iterator[str]:
    import uuid  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(seeded_template)
            )
        )
    yield f"{postgres_url.rpartition('/')[0]}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def settings_for(url: str, **overrides: Any) -> Settings:
    """The test settings on ``url``; ``overrides`` name settings of any section."""
    return load_settings(database_url=url, **{**TEST_SETTINGS, **overrides})


def app_at(url: str, now: datetime = NOW, **overrides: Any) -> FastAPI:
    """The API on ``url`` with its clock stopped at ``now``: open ranges end there and
    the scenario's day is as old on every day the tests run."""
    app = create_app(settings_for(url, **overrides))
    app.dependency_overrides[get_now] = lambda: now
    return app


@pytest.fixture
def make_client(seeded_url: str) -> Iterator[Callable[..., httpx.Client]]:
    """``make_client(**settings)``: a client of a running server on the seeded database."""
    opened: list[tuple[ServerThread, httpx.Client]] = []

    def make(url: str | None = None, **overrides: Any) -> httpx.Client:
        server = ServerThread(app_at(url or seeded_url, **overrides)).__enter__()
        client = httpx.Client(base_url=server.url, timeout=30)
        opened.append((server, client))
        return client

    yield make
    for server, client in opened:
        client.close()
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def shared_url(postgres_url: str, seeded_template: str) -> Iterator[str]:
    """One clone of the scenario for every test that only reads (and creates keys)."""
    import uuid  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    name = f"shared_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(seeded_template)
            )
        )
    yield f"{postgres_url.rpartition('/')[0]}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def shared_server(shared_url: str) -> Iterator[ServerThread]:
    with ServerThread(app_at(shared_url)) as server:
        yield server


@pytest.fixture
def client(shared_server: ServerThread) -> Iterator[httpx.Client]:
    """A client of the shared server (read-only scenario, default settings)."""
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        yield client


def _keys(url: str) -> dict[Role, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            role: create_key(conn, role, label=f"test {role}").token
            for role in (Role.OFFICER, Role.RESEARCHER, Role.ADMIN)
        }


@pytest.fixture(scope="session")
def keys(shared_url: str) -> dict[Role, str]:
    """One key per keyed role, on the shared database."""
    return _keys(shared_url)


@pytest.fixture
def own_keys(seeded_url: str) -> dict[Role, str]:
    """One key per keyed role, on this test's own database (``make_client``)."""
    return _keys(seeded_url)
