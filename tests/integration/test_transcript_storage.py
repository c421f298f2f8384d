"""Transcription state in the database: claims, stale claims, one transcript per question."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage import questions
from storage.db import unit_of_work
from storage.models import Question, Transcript
from storage.transcripts import (
    claim_transcription,
    questions_to_transcribe,
    save_transcript,
    set_transcription_state,
)

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def stored_question(factory: sessionmaker[Session], sid: str = "RE" + "1" * 32) -> int:
    with unit_of_work(factory) as session:
        question, recording, _ = questions.record_question(
            session, recording_sid=sid, call_sid="CA" + "1" * 32,
            recording_url="https://api.twilio.com/r", duration=5, language="ru", topic=None,
            now=NOW)
        questions.mark_recording_stored(session, recording, "recordings/x.wav", NOW)
        return question.id


def state(factory: sessionmaker[Session], question_id: int) -> tuple[str, int]:
    with unit_of_work(factory) as session:
        question = session.get(Question, question_id)
        assert question is not None
        return question.transcription_state, question.transcription_attempts


def transcript_count(factory: sessionmaker[Session]) -> int:
    with unit_of_work(factory) as session:
        return session.scalar(select(func.count()).select_from(Transcript)) or 0


def test_only_one_claim_wins_until_it_goes_stale(session_factory) -> None:
    qid = stored_question(session_factory)
    with unit_of_work(session_factory) as session:
        assert claim_transcription(session, qid, NOW, stale_before=NOW - timedelta(minutes=10))
    with unit_of_work(session_factory) as session:
        assert not claim_transcription(session, qid, NOW + timedelta(minutes=1),
                                       stale_before=NOW - timedelta(minutes=9))
    assert state(session_factory, qid) == ("running", 1)
    # Ten minutes on, the running claim is stale: its worker died; another may take over.
    later = NOW + timedelta(minutes=11)
    with unit_of_work(session_factory) as session:
        assert claim_transcription(session, qid, later, stale_before=later - timedelta(minutes=10))
    assert state(session_factory, qid) == ("running", 2)


def test_two_concurrent_claims_one_winner(session_factory) -> None:
    qid = stored_question(session_factory)
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def claim() -> None:
        barrier.wait()
        with unit_of_work(session_factory) as session:
            results.append(claim_transcription(session, qid, NOW,
                                               stale_before=NOW - timedelta(minutes=10)))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]


def test_failed_and_no_model_are_claimed_only_when_asked(session_factory) -> None:
    qid = stored_question(session_factory)
    with unit_of_work(session_factory) as session:
        set_transcription_state(session, qid, "no_model", NOW, "no model for ru")
    with unit_of_work(session_factory) as session:
        assert not claim_transcription(session, qid, NOW, stale_before=NOW)
        assert claim_transcription(session, qid, NOW, stale_before=NOW, also=("no_model",))


def test_saving_twice_keeps_one_transcript(session_factory) -> None:
    qid = stored_question(session_factory)
    for expected in (True, False):
        with unit_of_work(session_factory) as session:
            created = save_transcript(
                session, qid, language="ru", model="m", text="привет",
                words=[{"word": "привет", "start": 0.1, "end": 0.5, "conf": 0.9}],
                confidence=0.9, duration=1.0, elapsed=0.2, now=NOW)
            assert created is expected
    assert transcript_count(session_factory) == 1
    assert state(session_factory, qid)[0] == "done"


def test_sweep_finds_only_stuck_work_with_audio(session_factory) -> None:
    stuck = stored_question(session_factory, "RE" + "2" * 32)
    fresh = stored_question(session_factory, "RE" + "3" * 32)
    with unit_of_work(session_factory) as session:
        no_audio, _, _ = questions.record_question(
            session, recording_sid="RE" + "4" * 32, call_sid="CA" + "4" * 32,
            recording_url="https://api.twilio.com/r", duration=5, language="ru", topic=None,
            now=NOW)
        no_audio_id = no_audio.id
        claim_transcription(session, stuck, NOW - timedelta(hours=1), stale_before=NOW)
        claim_transcription(session, fresh, NOW, stale_before=NOW)
    with unit_of_work(session_factory) as session:
        found = questions_to_transcribe(session, ("pending", "running"),
                                        updated_before=NOW - timedelta(minutes=10))
    assert found == [stuck]
    assert no_audio_id not in found
