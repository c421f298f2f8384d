"""Property-based tests (hypothesis) of bad input: every Twilio webhook and every workspace form.

One app per test module (`prop_app`, module-scoped): the suite's `app` fixture is built per test,
which is too slow for hundreds of generated requests, and hypothesis refuses function-scoped
fixtures inside @given. The app is built like tests/support.py's `app` (same credentials, jobs
run inline through Huey's immediate mode) on SQLite only: PostgreSQL is covered by the
integration tests. The REST API URL points at a closed local port, so a form that would make
Twilio call or send an SMS fails fast inside the app (the app's own error path) instead of
reaching the network.

`server_errors` collects ERROR log records of the hotline's own loggers: the voice and SMS
blueprints turn any exception into a friendly TwiML answer (an apology, "message received"), so
a status code alone would hide a crash. A test asserts the list stays empty.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from hotline.app import create_app
from hotline.config import Settings
from hotline.jobs import huey
from storage.db import unit_of_work, upgrade
from tests.support import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, row_counts, runtime

# A local port nothing listens on: REST calls to "Twilio" are refused at once.
CLOSED_API = "http://127.0.0.1:9"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides the suite's SQLite/PostgreSQL parametrisation)."""
    return f"sqlite:///{tmp_path / 'data' / 'hotline.sqlite3'}"


def database_folder(fallback: Path) -> Path:
    """A folder for a module's database: in memory (/dev/shm) when there is one.

    Hundreds of generated requests each commit; on a real disk the fsyncs dominate the run.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="hotline-property-", dir=shm))
    return fallback


def property_settings(folder: Path, **overrides: object) -> Settings:
    """The suite's test settings on a fresh migrated SQLite database (under folder or shm)."""
    url = f"sqlite:///{database_folder(folder / 'data') / 'hotline.sqlite3'}"
    upgrade(url)
    settings = Settings(
        data_dir=folder / "instance",
        database_url=url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_phone_number="+77000000000",
        twilio_media_hosts=("api.twilio.com",),
        twilio_api_url=CLOSED_API,
        public_base_url=BASE_URL,
        download_attempts=1,
        download_backoff=0.0,
    )
    return settings.override(**overrides) if overrides else settings


@pytest.fixture(scope="module")
def prop_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """One hotline app for the whole test module (jobs inline, SQLite)."""
    huey.immediate = True
    application = create_app(property_settings(tmp_path_factory.mktemp("property")))
    refuse_nul_like_postgresql(application)
    yield application
    dispose(application)


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def refuse_nul_like_postgresql(application: Flask) -> None:
    """Make the app's SQLite refuse text with NUL characters, as PostgreSQL does.

    PostgreSQL answers "text fields cannot contain NUL (0x00) bytes"; SQLite stores them. The
    property tests run on SQLite only, so without this a NUL from a form would pass here and be
    a 500 in production.
    """

    def check(_conn: object, _cursor: object, statement: str, parameters: object,
              _context: object, _executemany: bool) -> None:
        if _has_nul(parameters):
            raise ValueError(f"PostgreSQL refuses NUL in text: {statement[:80]}")

    event.listen(runtime(application).engine, "before_cursor_execute", check)


def dispose(application: Flask) -> None:
    """Close the app's pool; remove its database when it was made in /dev/shm."""
    rt = runtime(application)
    rt.dispose()
    folder = Path(rt.settings.database_url.removeprefix("sqlite:///")).parent
    if folder.name.startswith("hotline-property-") and folder.parent == Path("/dev/shm"):
        shutil.rmtree(folder, ignore_errors=True)


def open_db(application: Flask) -> AbstractContextManager[Session]:
    """A committed-on-exit session on the app's database."""
    return unit_of_work(runtime(application).sessions)


def counts(application: Flask) -> dict[str, int]:
    """Rows in every table of the app's database."""
    with open_db(application) as session:
        return row_counts(session)


class ErrorLog(logging.Handler):
    """Keeps ERROR records of the hotline's loggers (a crash hidden behind a friendly answer)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[str]:
        """The messages (with their exception) since the last take; forget them."""
        taken = [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info
                 else f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return taken


@pytest.fixture(scope="module")
def server_errors() -> Iterator[ErrorLog]:
    """ERROR records of the `hotline` loggers during the module's tests."""
    handler = ErrorLog()
    logger = logging.getLogger("hotline")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
