"""Transcribe recorded questions: claim the row, decode offline with Vosk, store the transcript.

The question row holds the state; a job only moves it forward, so a job that runs twice, or
after a worker was killed, never stores a second transcript (unique question_id in transcripts).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from hotline.runtime import Runtime
from speech.errors import NoModel, SpeechError
from storage.audio_store import UnsafeAudioKey
from storage.db import unit_of_work
from storage.models import (
    DOWNLOAD_STORED,
    TRANSCRIPTION_FAILED,
    TRANSCRIPTION_NO_MODEL,
    TRANSCRIPTION_PENDING,
    TRANSCRIPTION_RUNNING,
    Question,
)
from storage.transcripts import claim_transcription, save_transcript, set_transcription_state

log = logging.getLogger(__name__)

# A question whose language is not known (the caller never chose one) is tried with these.
FALLBACK_LANGUAGES = ("ru", "kk")


class TranscriptionRetry(Exception):
    """A passing failure: try again after delay seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def _language_for(runtime: Runtime, language: str | None) -> str:
    if language:
        return language
    installed = runtime.speech.registry.installed()
    return next((lang for lang in FALLBACK_LANGUAGES if lang in installed), FALLBACK_LANGUAGES[0])


def transcribe_question(
    runtime: Runtime, question_id: int, *, also: tuple[str, ...] = ()
) -> str:
    """Transcribe one question if nobody else is; return its transcription state afterwards.

    also: further states that may be claimed (the CLI's --pending retries failed and
    no-model questions; jobs only take pending ones and stale running ones).
    """
    settings = runtime.settings
    now = datetime.now(UTC)
    with unit_of_work(runtime.sessions) as session:
        stale_before = now - timedelta(seconds=settings.stale_seconds)
        was = session.get(Question, question_id)
        died = was is not None and was.transcription_state == TRANSCRIPTION_RUNNING
        if not claim_transcription(session, question_id, now, stale_before=stale_before,
                                   also=also):
            question = session.get(Question, question_id)
            return question.transcription_state if question else "missing"
        question = session.get(Question, question_id, populate_existing=True)
        assert question is not None
        if died and question.transcription_attempts > settings.transcription_attempts:
            # This try would be one more than HOTLINE_TRANSCRIPTION_ATTEMPTS allows, and the
            # last one ended with its worker gone mid-decoding (killed, out of memory, a crash
            # in the decoder): a recording that brings workers down is not tried again every
            # few minutes for ever.
            attempts = question.transcription_attempts - 1
            set_transcription_state(
                session, question_id, TRANSCRIPTION_FAILED, now,
                f"gave up after {attempts} attempts: the worker stopped while decoding it "
                "(killed, out of memory, or a crash); `hotline transcribe --pending` tries "
                "again")
            log.warning("question %s not transcribed: %s attempts ended with the worker gone",
                        question_id, attempts)
            return TRANSCRIPTION_FAILED
        recording = question.recording
        if recording is None or recording.download_state != DOWNLOAD_STORED or (
            not recording.file_path
        ):
            # Nothing to hear yet: the download job enqueues us again once the audio is here.
            # Not a try at decoding: the attempts count only those.
            question.transcription_attempts = max(0, question.transcription_attempts - 1)
            set_transcription_state(session, question_id, TRANSCRIPTION_PENDING, now,
                                    "waiting for the audio download")
            return TRANSCRIPTION_PENDING
        key = recording.file_path
        language = _language_for(runtime, question.language)
        attempts = question.transcription_attempts
    try:
        # The audio store gives a file on this machine: its own (folder) or a temporary copy
        # (database), so a worker needs no disk shared with the web processes.
        with runtime.audio.local_path(key) as path:
            transcript = runtime.speech.transcribe(path, language)
    except NoModel as exc:
        return _stop(runtime, question_id, TRANSCRIPTION_NO_MODEL, str(exc))
    except SpeechError as exc:
        if exc.permanent:
            return _stop(runtime, question_id, TRANSCRIPTION_FAILED, str(exc))
        return _retry_or_fail(runtime, question_id, attempts, str(exc))
    except UnsafeAudioKey as exc:
        return _stop(runtime, question_id, TRANSCRIPTION_FAILED, f"unsafe audio key {exc}")
    except OSError as exc:  # AudioMissing too: another try, in case the audio comes back
        return _retry_or_fail(runtime, question_id, attempts, f"{type(exc).__name__}: {exc}")
    with unit_of_work(runtime.sessions) as session:
        save_transcript(
            session, question_id, language=transcript.language, model=transcript.model,
            text=transcript.text,
            words=[{"word": w.word, "start": w.start, "end": w.end, "conf": w.conf}
                   for w in transcript.words],
            confidence=transcript.confidence, duration=transcript.duration,
            elapsed=transcript.elapsed, now=datetime.now(UTC),
        )
    log.info("question %s transcribed in %.2f s (%s)", question_id, transcript.elapsed,
             transcript.model)
    return "done"


def _stop(runtime: Runtime, question_id: int, state: str, error: str) -> str:
    log.warning("question %s not transcribed (%s): %s", question_id, state, error)
    with unit_of_work(runtime.sessions) as session:
        set_transcription_state(session, question_id, state, datetime.now(UTC), error)
    return state


def _retry_or_fail(runtime: Runtime, question_id: int, attempts: int, error: str) -> str:
    settings = runtime.settings
    if attempts >= settings.transcription_attempts:
        return _stop(runtime, question_id, TRANSCRIPTION_FAILED,
                     f"gave up after {attempts} attempts: {error}")
    delay = settings.retry_backoff * 2 ** (attempts - 1)
    now = datetime.now(UTC)
    with unit_of_work(runtime.sessions) as session:
        set_transcription_state(session, question_id, TRANSCRIPTION_PENDING, now, error,
                                retry_at=now + timedelta(seconds=delay))
    raise TranscriptionRetry(error, delay=delay)
