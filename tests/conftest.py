"""Fixtures shared by the whole test suite: databases on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from psycopg import sql
from sqlalchemy.orm import Session, sessionmaker

import storage.users
from storage.db import make_engine, make_session_factory, upgrade
from tests.paths import SCREENSHOTS

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"
POSTGRES_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _postgres_admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres ({error}). "
            "Start it (.ci/run does), or deselect these tests with -m 'not postgres'.",
            pytrace=False,
        )


# The passwords' hasher as the hotline runs it: Argon2id at argon2-cffi's default cost (64 MiB,
# 3 passes; 0.15-0.4 s a hash or a check on these 2-core machines).
PRODUCTION_HASHER = storage.users.hasher
# The same algorithm and code at the smallest cost, for the accounts the fixtures make and the
# logins of the tests' browsers: at the default cost they took minutes of `make test`.
# test_auth.py::test_users_add_stores_an_argon2_hash_never_the_password uses the real one.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def any_free_disk_will_do() -> Iterator[None]:
    """The health checks' free-space limit at 0: the shared test machine's disk (seen with
    287 MB free) is not what the tests of /health/ready are about; test_health.py checks the
    limit itself with one above the disk's free space."""
    import hotline.health

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hotline.health, "DISK_FREE_MIN", 0)
        yield


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """Hash and check passwords with CHEAP_HASHER (a hash made with either checks with
    either: Argon2 keeps its parameters in the hash).

    For the whole session, so that it is in place before any fixture of a wider scope than a
    test makes an account (pytest sets fixtures up widest scope first): a module's accounts
    hashed at the production cost were rehashed at the first login of a test
    (storage.users.attempt_login): slow, and (before sessions stopped depending on the hash)
    the module's logged-in browsers were logged out.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage.users, "hasher", CHEAP_HASHER)
        yield


@pytest.fixture
def production_hashing(monkeypatch: pytest.MonkeyPatch) -> PasswordHasher:
    """The hotline's own hasher, at its real cost."""
    monkeypatch.setattr(storage.users, "hasher", PRODUCTION_HASHER)
    return PRODUCTION_HASHER


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Yield the URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"hotline_test_{secrets.token_hex(6)}"
    with _postgres_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield POSTGRES_SERVER + name
    finally:
        with _postgres_admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return the URL of an empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        # A folder that does not exist yet: make_engine must create it.
        return f"sqlite:///{tmp_path / 'data' / 'hotline.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per run (each test's migrated database is a copy)."""
    path = tmp_path_factory.mktemp("template") / "hotline.sqlite3"
    upgrade(f"sqlite:///{path}")
    with closing(sqlite3.connect(path)) as connection:  # all in the file, nothing in its log
        busy, _log, _done = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database migrated once per run, a template for the tests'."""
    name = f"hotline_template_{secrets.token_hex(6)}"
    with _postgres_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(POSTGRES_SERVER + name)
        yield name
    finally:
        with _postgres_admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def migrated_url(request: pytest.FixtureRequest, database_url: str) -> str:
    """Return the URL of a database migrated to the newest revision.

    A copy of one that `upgrade` migrated once per run: the SQLite file copied, the PostgreSQL
    database made again from a template (a tenth of a second each, where migrating took a
    third; a thousand tests use one). tests/integration/test_storage.py runs the migrations
    themselves.
    """
    if database_url.startswith("sqlite:///"):
        target = Path(database_url.removeprefix("sqlite:///"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return database_url
    if database_url.startswith(POSTGRES_SERVER):
        template = request.getfixturevalue("postgres_template")
        name = sql.Identifier(database_url.removeprefix(POSTGRES_SERVER))
        with _postgres_admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(name))
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                name, sql.Identifier(template)))
        return database_url
    upgrade(database_url)
    return database_url


@pytest.fixture
def session_factory(migrated_url: str) -> Iterator[sessionmaker[Session]]:
    """Yield a session factory on a migrated database."""
    engine = make_engine(migrated_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


pytest_plugins = ["tests.support", "tests.workspace_support"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Empty the browser tests' screenshot folder once per run, in the main process (a
    pytest-xdist worker has workerinput): it shows the last run's pages."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
