"""An operator's checks: GET /health/ready and `hotline health` (hotline.health)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import select, text

from hotline import health as health_checks
from hotline import jobs
from hotline.cli import main as hotline_cli
from storage import health
from storage.db import make_engine, make_session_factory
from storage.models import (
    DOWNLOAD_FAILED,
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    QUESTION_CLOSED,
    TRANSCRIPTION_NO_MODEL,
    TRANSCRIPTION_PENDING,
    Question,
    Recording,
)
from storage.questions import SWEEP_DOWNLOAD_ATTEMPTS, record_question
from storage.sms import queue_outbound
from tests.support import runtime
from tests.workspace_support import Db

NAMES = ["database", "worker", "downloads", "given_up_downloads", "transcriptions",
         "speech_models", "sms", "queue", "disk"]


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request checks again (test_the_web_answer_is_cached checks the cache)."""
    monkeypatch.setattr(health_checks, "CACHE_SECONDS", 0.0)


def ready(app: Flask) -> tuple[int, dict[str, Any]]:
    """GET /health/ready: its status and its document, which holds no figures."""
    response = app.test_client().get("/health/ready")
    assert response.headers["Cache-Control"] == "no-store"
    document = response.get_json()
    assert all(set(one) == {"ok"} for one in document["checks"].values()), document
    return response.status_code, document


def figures(app: Flask) -> dict[str, Any]:
    """The checks with their figures, as `hotline health --json` prints them."""
    return health_checks.as_json(health_checks.check(runtime(app)))


def health_cli(app: Flask, *args: str) -> Result:
    obj = ScriptInfo(create_app=lambda: app)
    return CliRunner().invoke(hotline_cli, ["health", *args], obj=obj, catch_exceptions=False)


def failing(document: dict[str, Any]) -> list[str]:
    return sorted(name for name, one in document["checks"].items() if not one["ok"])


def recording(db: Db, age: timedelta, **values: Any) -> int:
    """A recorded question Twilio reported age ago; its audio not downloaded yet."""
    with db() as session:
        _question, stored, _new = record_question(
            session, recording_sid="RE" + uuid.uuid4().hex, call_sid="CA" + uuid.uuid4().hex,
            recording_url="https://api.twilio.com/rec", duration=12, language="ru", topic=None,
            now=datetime.now(UTC) - age)
        for name, value in values.items():
            setattr(stored, name, value)
        return stored.id


def test_a_hotline_whose_worker_never_ran_is_not_ready(app: Flask) -> None:
    status, document = ready(app)
    assert status == 503 and document["status"] == "failing"
    assert sorted(document["checks"]) == sorted(NAMES)
    assert failing(document) == ["worker"]
    assert figures(app)["checks"]["worker"]["detail"] == "no worker has run the sweep yet"
    # The sweep (the worker's, every minute) is its sign of life.
    jobs.sweep(runtime(app))
    status, document = ready(app)
    assert (status, document["status"], failing(document)) == (200, "ok", [])
    checks = figures(app)["checks"]
    assert 0 <= checks["worker"]["last_sweep_seconds"] <= 5
    assert checks["downloads"] == {
        "ok": True, "detail": "0 recordings waiting", "waiting": 0, "oldest_seconds": None}
    assert checks["queue"]["ok"] and checks["queue"]["jobs"] >= 0


def test_a_worker_silent_for_five_minutes_fails(app: Flask, db: Db) -> None:
    with db() as session:
        health.beat(session, health.SWEEP, datetime.now(UTC) - timedelta(minutes=6))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["worker"]
    assert "is a worker running?" in figures(app)["checks"]["worker"]["detail"]
    with db() as session:  # written again, not a second row
        health.beat(session, health.SWEEP, datetime.now(UTC) - timedelta(minutes=4))
    assert ready(app)[0] == 200


def test_work_waiting_past_its_limit_fails_its_check(app: Flask, db: Db) -> None:
    jobs.sweep(runtime(app))  # a worker is running
    stale = runtime(app).settings.stale_seconds
    # Within the limits (2 x HOTLINE_STALE_SECONDS for downloads and SMS): ready.
    recording(db, timedelta(seconds=stale))
    assert ready(app)[0] == 200
    assert figures(app)["checks"]["downloads"]["waiting"] == 1
    # A recording not downloaded after 25 minutes.
    late = recording(db, timedelta(minutes=25))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["downloads"]
    downloads = figures(app)["checks"]["downloads"]
    assert downloads["waiting"] == 2 and downloads["oldest_seconds"] >= 25 * 60
    assert downloads["detail"].startswith(
        "2 recordings waiting, the oldest for 25 min (limit 20 min)")
    # Stored two hours after the call, and its transcript not begun for over an hour.
    with db() as session:
        row = session.get(Recording, late)
        question = session.get(Question, row.question_id) if row else None
        assert row is not None and question is not None
        row.download_state = DOWNLOAD_STORED
        row.updated_at = datetime.now(UTC) - timedelta(minutes=61)
        question.transcription_state = TRANSCRIPTION_PENDING
        # A try that began a moment ago does not make the wait shorter.
        question.transcription_updated_at = datetime.now(UTC)
    status, document = ready(app)
    assert failing(document) == ["transcriptions"]
    assert figures(app)["checks"]["transcriptions"]["waiting"] == 1
    # An SMS not handed to Twilio for half an hour.
    with db() as session:
        queue_outbound(session, phone="+77011234567", body="Сәлем", language="kk",
                       caller=None, question_id=None, encoding="UCS-2", segments=1,
                       now=datetime.now(UTC) - timedelta(minutes=30))
    assert failing(ready(app)[1]) == ["sms", "transcriptions"]


def test_questions_waiting_for_a_speech_model_fail_until_it_is_installed(
        app: Flask, db: Db) -> None:
    """No model for a question's language: no job will transcribe it, and nothing else fails
    (it is not pending): the check says so and what to do, until they are transcribed."""
    jobs.sweep(runtime(app))
    late = recording(db, timedelta(minutes=1))
    with db() as session:
        row = session.get(Recording, late)
        question = session.get(Question, row.question_id) if row else None
        assert row is not None and question is not None
        row.download_state = DOWNLOAD_STORED
        question.transcription_state = TRANSCRIPTION_NO_MODEL
        question_id = question.id
    status, document = ready(app)
    assert status == 503 and failing(document) == ["speech_models"]
    models = figures(app)["checks"]["speech_models"]
    assert models["waiting"] == 1 and models["detail"] == (
        "1 question waits for a speech model: install it (`hotline models install`), then "
        "`hotline transcribe --pending`")
    # A closed one (a wrong number, say) waits for nothing.
    with db() as session:
        closed = session.get(Question, question_id)
        assert closed is not None
        closed.status = QUESTION_CLOSED
    assert ready(app)[0] == 200


def test_a_recording_no_job_will_fetch_fails_for_three_days(app: Flask, db: Db) -> None:
    jobs.sweep(runtime(app))
    # Refused (a media host not allowed), however young; failed on every try the sweep makes.
    recording(db, timedelta(minutes=1), download_state=DOWNLOAD_REFUSED)
    recording(db, timedelta(days=2), download_state=DOWNLOAD_FAILED,
              download_attempts=SWEEP_DOWNLOAD_ATTEMPTS)
    # A failed one with tries left is the downloads' backlog, not this check's.
    recording(db, timedelta(minutes=2), download_state=DOWNLOAD_FAILED, download_attempts=3)
    assert failing(ready(app)[1]) == ["given_up_downloads"]
    checks = figures(app)["checks"]
    assert checks["given_up_downloads"]["waiting"] == 2
    assert "`hotline recordings retry`" in checks["given_up_downloads"]["detail"]
    assert checks["downloads"]["waiting"] == 1
    # Three days on, the alarm is over; the figures still count them.
    with db() as session:
        for row in session.scalars(select(Recording).where(Recording.download_attempts != 3)):
            row.created_at = datetime.now(UTC) - timedelta(days=3, minutes=1)
    assert ready(app)[0] == 200
    given_up = figures(app)["checks"]["given_up_downloads"]
    assert (given_up["waiting"], given_up["lately"]) == (2, 0)


def test_the_command_prints_the_checks_and_fails_with_them(app: Flask) -> None:
    result = health_cli(app)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines] == NAMES
    assert lines[1].startswith("FAIL  worker") and lines[0].startswith("ok    database")
    jobs.sweep(runtime(app))
    result = health_cli(app, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["status"] == "ok" and document["checks"]["sms"]["waiting"] == 0


def test_a_database_or_queue_that_does_not_answer_fails(
        app: Flask, db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime(app)
    jobs.sweep(rt)
    # Nothing listens on port 1: a real connection, refused.
    gone = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/hotline")
    try:
        checks = health_checks.check(dataclasses.replace(rt, sessions=make_session_factory(gone)))
    finally:
        gone.dispose()
    assert [(c.name, c.ok) for c in checks] == [("database", False), ("queue", True),
                                                ("disk", True)]
    assert checks[0].detail == "does not answer (OperationalError)"
    # A database that answers but lacks a table (not migrated): the database check passes.
    with db() as session:
        session.execute(text("DROP TABLE heartbeats"))
    checks = health_checks.check(rt)
    assert [(c.name, c.ok) for c in checks] == [
        ("database", True), ("backlogs", False), ("queue", True), ("disk", True)]
    monkeypatch.setattr(jobs, "huey", jobs.make_huey(dataclasses.replace(
        rt.settings, redis_url="redis://127.0.0.1:1/0")))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["backlogs", "queue"]
    assert figures(app)["checks"]["queue"]["detail"] == "does not answer (ConnectionError)"


def test_a_database_never_migrated_fails_in_one_line(
        app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A database that answers but was never migrated (a wrong DATABASE_URL, a missed `hotline
    db upgrade`) fails the database check with what to do, and the log says so in one line, not
    with a traceback on every poll of /health/ready."""
    rt = runtime(app)
    jobs.sweep(rt)
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with caplog.at_level(logging.WARNING, logger="hotline.health"):
            checks = health_checks.check(
                dataclasses.replace(rt, sessions=make_session_factory(empty)))
    finally:
        empty.dispose()
    assert [(c.name, c.ok) for c in checks] == [("database", False), ("queue", True),
                                                ("disk", True)]
    assert checks[0].detail == ("answers, but has no tables (never migrated): run `hotline db "
                                "upgrade`, or check DATABASE_URL")
    logged = [r for r in caplog.records if r.name == "hotline.health"]
    assert [r.exc_info for r in logged] == [None]
    assert "never migrated" in logged[0].getMessage()


def test_the_web_answer_is_cached(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_checks, "CACHE_SECONDS", 60.0)
    assert ready(app)[0] == 503  # no sweep yet
    jobs.sweep(runtime(app))
    assert ready(app)[0] == 503  # the same answer for a minute
    assert health_cli(app).exit_code == 0  # the command checks afresh
    monkeypatch.setattr(health_checks, "CACHE_SECONDS", 0.0)
    assert ready(app)[0] == 200


def test_a_disk_short_of_room_fails(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder's real disk, with a limit above what it has free: the check fails and
    says how much is left; under the limit's default (1 GB) on a roomy disk it passes."""
    folder = runtime(app).settings.data_dir
    free = shutil.disk_usage(folder).free
    short = health_checks.disk_check(folder, needed=free + 2**30)
    # (Other tests write files meanwhile: the MB figure itself may have moved.)
    assert not short.ok and re.match(rf"\d+ MB free in {re.escape(str(folder))} \(limit ",
                                     short.detail), short.detail
    roomy = health_checks.disk_check(folder, needed=free // 2)
    assert roomy.ok and roomy.figures["free_bytes"] >= free // 2
    jobs.sweep(runtime(app))
    monkeypatch.setattr(health_checks, "DISK_FREE_MIN", free + 2**30)
    status, document = ready(app)
    assert (status, failing(document)) == (503, ["disk"])
    # A data folder not made yet: nothing to say of its disk.
    assert health_checks.disk_check(folder / "missing").detail == (
        "not measured (FileNotFoundError)")
