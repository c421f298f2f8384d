"""The sweep and the jobs it queues again: once per stale time, not once a minute; a passing
transcription failure's retry delay kept; a failed download never overwriting a stored one.
On SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from hotline import jobs, recordings
from storage.db import unit_of_work
from storage.models import (
    DOWNLOAD_FAILED,
    DOWNLOAD_STORED,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Question,
    Recording,
)
from storage.questions import record_question
from storage.transcripts import claim_transcription, set_transcription_state
from tests.support import held_meanwhile, runtime

Db = Callable[[], AbstractContextManager[Session]]


def _recording(db: Db, age: timedelta, **values: Any) -> tuple[int, int]:
    """A question and its recording, reported age ago; (question id, recording id)."""
    with db() as session:
        question, recording, _new = record_question(
            session, recording_sid="RE" + uuid.uuid4().hex, call_sid="CA" + uuid.uuid4().hex,
            recording_url="https://api.twilio.com/rec", duration=12, language="ru",
            topic=None, now=datetime.now(UTC) - age)
        for name, value in values.items():
            setattr(recording, name, value)
        return question.id, recording.id


def test_the_sweep_queues_a_job_once_per_stale_time(
        app: Flask, db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A media host down: the sweep queues the failed download again, and the next minute's
    sweep, while that job still waits its turn, does not queue a second (the queue grew by one
    job a recording a minute, and every other caller's audio waited behind them). The same for
    a pending transcription."""
    stale = runtime(app).settings.stale_seconds
    _q, failed = _recording(db, timedelta(hours=1), download_state=DOWNLOAD_FAILED,
                            download_attempts=3,
                            updated_at=datetime.now(UTC) - timedelta(seconds=stale + 60))
    question_id, _r = _recording(db, timedelta(hours=1), download_state=DOWNLOAD_STORED,
                                 file_path="recordings/x.wav")
    queued: list[tuple[str, int]] = []
    monkeypatch.setattr(jobs, "download_recording_job",
                        lambda recording_id: queued.append(("download", recording_id)))
    monkeypatch.setattr(jobs, "transcribe_question_job",
                        lambda question_id: queued.append(("transcribe", question_id)))
    assert jobs.sweep(runtime(app)) == (1, 1)
    assert jobs.sweep(runtime(app)) == (0, 0)  # a minute later: the jobs are still queued
    assert queued == [("download", failed), ("transcribe", question_id)]
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None and question.transcription_state == TRANSCRIPTION_PENDING


def test_a_retry_waits_its_delay_whoever_comes_first(app: Flask, db: Db) -> None:
    """After a passing failure the question is pending with a time before which no job takes
    it: a copy of its job queued earlier does not spend the next try at once. An operator's
    command (`also`) takes it anyway; the retry at its time does."""
    question_id, _r = _recording(db, timedelta(hours=1), download_state=DOWNLOAD_STORED,
                                 file_path="recordings/x.wav")
    now = datetime.now(UTC)
    with db() as session:
        set_transcription_state(session, question_id, TRANSCRIPTION_PENDING, now,
                                "AudioMissing", retry_at=now + timedelta(seconds=60))
    stale = now - timedelta(minutes=10)
    with db() as session:
        assert not claim_transcription(session, question_id, now, stale_before=stale)
    with db() as session:
        later = now + timedelta(seconds=61)
        assert claim_transcription(session, question_id, later, stale_before=stale)
        question = session.get(Question, question_id)
        assert question is not None and question.transcription_state == TRANSCRIPTION_RUNNING
    with db() as session:
        set_transcription_state(session, question_id, TRANSCRIPTION_PENDING, now,
                                "AudioMissing", retry_at=now + timedelta(seconds=60))
    with db() as session:
        assert claim_transcription(session, question_id, now, stale_before=stale,
                                   also=("failed",))


def test_a_failed_download_never_overwrites_the_other_jobs_stored_audio(
        app: Flask, db: Db, monkeypatch: pytest.MonkeyPatch, question_wav: Path) -> None:
    """Twilio's two webhooks each queue a download. One fails while the other stores the audio,
    committing just after the failing one looked: the failing one waits for the row and finds
    it stored (on PostgreSQL a plain read missed it, and "failed" overwrote "stored", leaving
    the audio unplayable until a sweep fetched it again)."""
    rt = runtime(app)
    _q, recording_id = _recording(db, timedelta(minutes=1))
    relative = "recordings/other-job.wav"

    def other_job(session: Session) -> None:  # stores, then holds the row a moment
        row = session.get(Recording, recording_id, with_for_update=True)
        assert row is not None
        rt.audio.put(relative, question_wav, session=session)
        row.download_state, row.file_path = DOWNLOAD_STORED, relative
        session.flush()

    meanwhile = ExitStack()

    def fails(*_args: object, **_kwargs: object) -> int:
        # The failing job reads, then writes, while the other holds its stored row.
        meanwhile.enter_context(held_meanwhile(lambda: unit_of_work(rt.sessions), other_job))
        raise recordings.DownloadError("HTTP 404 from media host")

    monkeypatch.setattr(recordings, "fetch_to_file", fails)
    with meanwhile:
        state = recordings.download_recording(rt, recording_id)
    assert state == DOWNLOAD_STORED
    with db() as session:
        row = session.get(Recording, recording_id)
        assert row is not None and (row.download_state, row.file_path) == (
            DOWNLOAD_STORED, relative)
