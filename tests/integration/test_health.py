"""An operator's checks: GET /health/ready and `hotline health` (hotline.health)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo

from hotline import jobs
from hotline.cli import main as hotline_cli
from hotline.health import check
from storage import health
from storage.db import make_engine, make_session_factory
from storage.models import (
    DOWNLOAD_REFUSED,
    DOWNLOAD_STORED,
    TRANSCRIPTION_PENDING,
    Question,
    Recording,
    SmsMessage,
)
from storage.questions import record_question
from storage.sms import queue_outbound
from tests.support import runtime
from tests.workspace_support import Db

NAMES = ["database", "worker", "downloads", "refused_downloads", "transcriptions", "sms",
         "queue"]


def ready(app: Flask) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/health/ready")
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.get_json()


def health_cli(app: Flask, *args: str) -> Result:
    obj = ScriptInfo(create_app=lambda: app)
    return CliRunner().invoke(hotline_cli, ["health", *args], obj=obj, catch_exceptions=False)


def failing(document: dict[str, Any]) -> list[str]:
    return sorted(name for name, one in document["checks"].items() if not one["ok"])


def recording(db: Db, age: timedelta) -> int:
    """A recorded question Twilio reported age ago; its audio not downloaded yet."""
    with db() as session:
        _question, stored, _new = record_question(
            session, recording_sid="RE" + uuid.uuid4().hex, call_sid="CA" + uuid.uuid4().hex,
            recording_url="https://api.twilio.com/rec", duration=12, language="ru", topic=None,
            now=datetime.now(UTC) - age)
        return stored.id


def test_a_hotline_whose_worker_never_ran_is_not_ready(app: Flask) -> None:
    status, document = ready(app)
    assert status == 503 and document["status"] == "failing"
    assert sorted(document["checks"]) == sorted(NAMES)
    assert failing(document) == ["worker"]
    assert document["checks"]["worker"]["detail"] == "no worker has run the sweep yet"
    assert document["checks"]["database"]["ok"] and document["checks"]["queue"]["ok"]
    # The sweep (the worker's, every minute) is its sign of life.
    jobs.sweep(runtime(app))
    status, document = ready(app)
    assert (status, document["status"], failing(document)) == (200, "ok", [])
    assert 0 <= document["checks"]["worker"]["last_sweep_seconds"] <= 5
    assert document["checks"]["downloads"] == {
        "ok": True, "detail": "0 recordings waiting", "waiting": 0, "oldest_seconds": None}


def test_a_worker_silent_for_five_minutes_fails(app: Flask, db: Db) -> None:
    with db() as session:
        health.beat(session, health.SWEEP, datetime.now(UTC) - timedelta(minutes=6))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["worker"]
    assert "is a worker running?" in document["checks"]["worker"]["detail"]
    with db() as session:  # written again, not a second row
        health.beat(session, health.SWEEP, datetime.now(UTC) - timedelta(minutes=4))
    assert ready(app)[0] == 200


def test_work_waiting_past_its_limit_fails_its_check(app: Flask, db: Db) -> None:
    jobs.sweep(runtime(app))  # a worker is running (and re-enqueues nothing yet: all is new)
    stale = runtime(app).settings.stale_seconds
    # Within the limits (2 x HOTLINE_STALE_SECONDS for downloads and SMS): ready.
    recording(db, timedelta(seconds=stale))
    status, document = ready(app)
    assert status == 200
    assert document["checks"]["downloads"]["waiting"] == 1
    # A recording not downloaded after 25 minutes.
    late = recording(db, timedelta(minutes=25))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["downloads"]
    assert document["checks"]["downloads"]["waiting"] == 2
    assert document["checks"]["downloads"]["oldest_seconds"] >= 25 * 60
    assert document["checks"]["downloads"]["detail"].startswith(
        "2 recordings waiting, the oldest for 25 min (limit 20 min)")
    # Refused: it waits for an operator, however young.
    with db() as session:
        row = session.get(Recording, late)
        assert row is not None
        row.download_state = DOWNLOAD_REFUSED
    assert failing(ready(app)[1]) == ["refused_downloads"]
    # Stored, and its transcript not begun for over an hour.
    with db() as session:
        row = session.get(Recording, late)
        question = session.get(Question, row.question_id) if row else None
        assert row is not None and question is not None
        row.download_state = DOWNLOAD_STORED
        question.transcription_state = TRANSCRIPTION_PENDING
        question.transcription_updated_at = datetime.now(UTC) - timedelta(minutes=61)
    status, document = ready(app)
    assert failing(document) == ["transcriptions"]
    assert document["checks"]["transcriptions"]["waiting"] == 1
    # An SMS not handed to Twilio for half an hour.
    with db() as session:
        message = queue_outbound(session, phone="+77011234567", body="Сәлем", language="kk",
                                 caller=None, question_id=None, encoding="UCS-2", segments=1,
                                 now=datetime.now(UTC) - timedelta(minutes=30))
        assert isinstance(message, SmsMessage)
    assert failing(ready(app)[1]) == ["sms", "transcriptions"]


def test_the_command_prints_the_checks_and_fails_with_them(app: Flask) -> None:
    result = health_cli(app)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines] == NAMES
    assert lines[1].startswith("FAIL  worker") and lines[0].startswith("ok    database")
    jobs.sweep(runtime(app))
    result = health_cli(app, "--json")
    assert result.exit_code == 0, result.output
    assert '"status": "ok"' in result.output


def test_a_database_or_queue_that_does_not_answer_fails(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime(app)
    jobs.sweep(rt)
    # Nothing listens on port 1: a real connection, refused.
    gone = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/hotline")
    try:
        checks = check(dataclasses.replace(rt, sessions=make_session_factory(gone)))
    finally:
        gone.dispose()
    assert [(c.name, c.ok) for c in checks] == [("database", False), ("queue", True)]
    assert checks[0].detail == "does not answer (OperationalError)"
    monkeypatch.setattr(jobs, "huey", jobs.make_huey(dataclasses.replace(
        rt.settings, redis_url="redis://127.0.0.1:1/0")))
    status, document = ready(app)
    assert status == 503 and failing(document) == ["queue"]
    assert document["checks"]["queue"]["detail"] == "does not answer (ConnectionError)"
