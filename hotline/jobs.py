"""Background jobs (Huey): SqliteHuey in the data folder by default, Redis with REDIS_URL.

The database, not the queue, is the source of truth: a job only moves a row forward, so running
it twice is harmless, and the sweep re-enqueues whatever a lost message or a killed worker left
behind (at worker start-up and every minute).

Jobs have priorities: an SMS first (a resident or a consultant waits for it), then recording
downloads (a consultant cannot listen before, and the audio is safe only once it is here), then
transcriptions, which take seconds each and pile up on a busy day. Without them, questions
recorded during a rush waited for every earlier transcription before their audio was fetched
(bench/README.md, load figures).
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from huey import Huey, PriorityRedisHuey, SqliteHuey, crontab
from huey.exceptions import RetryTask
from huey.storage import RedisStorage
from redis import ConnectionPool

from hotline.backup import BackupError, make_backup, note_outcome
from hotline.cli_retention import run_retention
from hotline.config import LOCAL_TIME, Settings
from hotline.outbound_sms import messages_to_send, reconcile_statuses, send_sms
from hotline.receipts import queue_receipt
from hotline.recording_catchup import catch_up_recordings
from hotline.recording_catchup import enabled as catch_up_enabled
from hotline.recordings import download_recording
from hotline.runtime import Runtime, build_runtime
from hotline.transcription import TranscriptionRetry, transcribe_question
from storage import claims, health, questions, transcripts
from storage.db import unit_of_work
from storage.models import DOWNLOAD_STORED, TRANSCRIPTION_PENDING, TRANSCRIPTION_RUNNING

log = logging.getLogger(__name__)

# Higher runs first (both SqliteHuey and PriorityRedisHuey order by it).
SMS_PRIORITY = 20
DOWNLOAD_PRIORITY = 10
TRANSCRIPTION_PRIORITY = 0
# The sweep (it also hands idle claims back) and the nightly retention never wait behind a backlog.
PERIODIC_PRIORITY = 30
# The Redis queue's name after the queue name: the key of RedisHuey's list (before priorities)
# was huey.redis.<queue name>, the sorted set's is huey.redis.<queue name>_by_priority.
PRIORITY_SUFFIX = "_by_priority"


# redis-py's settings for a Redis on another machine that stops answering (a network split,
# a machine gone without closing its connections). redis-py before 8 has none by default:
# enqueueing a job then waits for ever, and the webhook that enqueues it (the recording's
# download, after the question is stored) answers past Twilio's 15 s, so the caller hears
# Twilio's error instead of the promise (redis-py 8 waits 5 s; pyproject admits 5.0). With
# them it fails within seconds, the webhook goes on (the sweep enqueues the job later), and a
# worker's blocking read (1 s, Huey's read_timeout) is not cut short. The same names in
# REDIS_URL's query (redis://host:6379/0?socket_timeout=10) win.
REDIS_CONNECT_DEFAULTS: dict[str, Any] = {
    "socket_connect_timeout": 3,
    "socket_timeout": 5,
    "health_check_interval": 30,  # a pooled connection idle this long is pinged before use
}


def make_huey(settings: Settings) -> Huey:
    """Return the queue the settings ask for."""
    if settings.redis_url:
        # Redis's sorted set keeps the priorities (plain RedisHuey's list cannot; Redis >= 5),
        # under its own name, so that processes of both versions never share a key during a
        # deploy (move_unordered_jobs empties the old one).
        # results=False: nothing reads a job's return value, and Huey would keep each one (a
        # failure's with its whole traceback) in the results hash forever. put_if_empty
        # (first_tonight) uses the same store and works without it.
        pool = ConnectionPool.from_url(settings.redis_url, **REDIS_CONNECT_DEFAULTS)
        return PriorityRedisHuey(settings.queue_name + PRIORITY_SUFFIX, connection_pool=pool,
                                 results=False)
    settings.make_data_dir()
    return SqliteHuey(settings.queue_name, filename=str(settings.jobs_file), results=False)


huey = make_huey(Settings.from_env())
_runtime: Runtime | None = None


def bind(runtime: Runtime) -> None:
    """Let jobs of this process use runtime (the web app binds its own)."""
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    """Return the bound runtime, building one from the environment in a worker process."""
    global _runtime
    if _runtime is None:
        _runtime = build_runtime(Settings.from_env())
    return _runtime


@huey.task(retries=3, retry_delay=60, priority=DOWNLOAD_PRIORITY)  # type: ignore[untyped-decorator]
def download_recording_job(recording_id: int) -> str:
    """Send the resident the question's receipt (if wanted), download the recording, then
    queue its transcription."""
    runtime = current_runtime()
    _send_receipt(runtime, recording_id)
    state = download_recording(runtime, recording_id)
    if state == DOWNLOAD_STORED:
        with unit_of_work(runtime.sessions) as session:
            recording = questions.get_recording(session, recording_id)
            question_id = recording.question_id if recording else None
        if question_id is not None:
            transcribe_question_job(question_id)
    return state


def _send_receipt(runtime: Runtime, recording_id: int) -> None:
    """Queue and send the receipt SMS (hotline.receipts); never in the way of the download."""
    try:
        message_id = queue_receipt(runtime, recording_id)
        if message_id is not None:
            send_sms_job(message_id)
    except Exception:  # noqa: BLE001 - a receipt is a courtesy; the question is what matters
        log.exception("no receipt for recording %s", recording_id)


@huey.task(priority=TRANSCRIPTION_PRIORITY)  # type: ignore[untyped-decorator]
def transcribe_question_job(question_id: int) -> str:
    """Transcribe one question; passing failures come back later with a growing delay."""
    try:
        return transcribe_question(current_runtime(), question_id)
    except TranscriptionRetry as exc:
        raise RetryTask(str(exc), delay=exc.delay) from exc


@huey.task(retries=5, retry_delay=60, priority=SMS_PRIORITY)  # type: ignore[untyped-decorator]
def send_sms_job(message_id: int) -> str:
    """Send one queued SMS; on SmsRetry (Twilio 5xx or 429, network) Huey tries again later."""
    return send_sms(current_runtime(), message_id)


def sweep(runtime: Runtime) -> tuple[int, int]:
    """Re-enqueue work whose row has not moved for too long; return (downloads, transcriptions)."""
    now = datetime.now(UTC)
    stale_before = now - timedelta(seconds=runtime.settings.stale_seconds)
    with unit_of_work(runtime.sessions) as session:
        health.beat(session, health.SWEEP, now)  # the worker's sign of life (/health/ready)
        # A consultant who claimed a question and went away gives it back to the queue.
        claims.lapse_claims(session, now - timedelta(minutes=runtime.settings.claim_idle_minutes))
        recording_ids = [r.id for r in questions.recordings_to_fetch(session, stale_before)]
        question_ids = transcripts.questions_to_transcribe(
            session, (TRANSCRIPTION_PENDING, TRANSCRIPTION_RUNNING), updated_before=stale_before)
        # Once per stale time, not once a minute while the queued job waits its turn.
        questions.mark_requeued(session, recording_ids, now)
        transcripts.mark_requeued(session, question_ids, now)
    for recording_id in recording_ids:
        download_recording_job(recording_id)
    for question_id in question_ids:
        transcribe_question_job(question_id)
    for message_id in messages_to_send(runtime):
        send_sms_job(message_id)
    try:
        reconcile_statuses(runtime)  # delivery reports Twilio's callbacks never brought
    except Exception:  # noqa: BLE001 - the rest of the sweep is done; the next one asks again
        log.exception("asking Twilio about SMS statuses failed")
    if recording_ids or question_ids:
        log.info("sweep re-enqueued %d downloads and %d transcriptions", len(recording_ids),
                 len(question_ids))
    return len(recording_ids), len(question_ids)


@huey.periodic_task(crontab(minute="*"), priority=PERIODIC_PRIORITY)  # type: ignore[untyped-decorator]
def sweep_job() -> tuple[int, int]:
    """Every minute: recover work that a lost message or a killed worker left behind."""
    move_unordered_jobs(huey)
    return sweep(current_runtime())


@huey.periodic_task(crontab(minute="*/10"), priority=PERIODIC_PRIORITY)  # type: ignore[untyped-decorator]
def catch_up_recordings_job() -> int:
    """Every 10 minutes: queue the question recordings Twilio has and no webhook stored
    (hotline.recording_catchup); return how many. If Twilio cannot be asked, the next run
    asks again."""
    runtime = current_runtime()
    if not catch_up_enabled(runtime):
        return 0
    try:
        outcome = catch_up_recordings(runtime)
    except Exception:  # noqa: BLE001 - Twilio, the network or the database, before any write
        log.exception("could not list Twilio's recordings to catch up; trying again later")
        return 0
    for recording_id, _sid in outcome.to_fetch:
        download_recording_job(recording_id)
    return len(outcome.added)


def move_unordered_jobs(queue: Huey) -> int:
    """Move jobs left in RedisHuey's list (from before priorities) into queue; return how many.

    Each is re-enqueued with its job's priority. Called at worker start and by every sweep, so
    a web process of the older version still pushing there during a deploy loses nothing either.
    """
    storage = queue.storage
    if not isinstance(storage, RedisStorage) or not storage.name.endswith(PRIORITY_SUFFIX):
        return 0
    old_key = "huey.redis." + storage.name.removesuffix(PRIORITY_SUFFIX)
    moved = 0
    # RPOP: the list's oldest first (RedisHuey pushed with LPUSH); each message is taken once.
    while (data := storage.conn.rpop(old_key)) is not None:
        # Its priority was None: the task takes its job's default priority.
        queue.enqueue(queue.deserialize_task(data))
        moved += 1
    if moved:
        log.warning("moved %d jobs from the unordered queue %s", moved, old_key)
    return moved


@huey.on_startup()  # type: ignore[untyped-decorator]
def sweep_at_start() -> None:
    """When a worker starts, recover at once rather than after the first minute."""
    move_unordered_jobs(huey)
    sweep(current_runtime())


def first_tonight(queue: Huey, job: str, now: datetime | None = None) -> bool:
    """Whether this worker is the first to run tonight's job (by Almaty date).

    Every consumer's scheduler enqueues the periodic tasks itself: with N worker machines on
    one Redis, each nightly task runs N times (N snapshots in one folder, racing over their
    `.partial-` folders; N retention runs). The first to write tonight's key into the queue's
    own shared store (Huey's put_if_empty: HSETNX on Redis, INSERT OR IGNORE on SQLite) runs
    it; the others log and skip. A run that fails is not retried by the others: as with one
    worker, the next night tries again. Yesterday's key is removed, so one key a job is kept.
    """
    night = (now or datetime.now(UTC)).astimezone(LOCAL_TIME).date()
    if not queue.put_if_empty(f"nightly:{job}:{night.isoformat()}", socket.gethostname()):
        log.info("%s: another worker has run it tonight already (%s)", job, night)
        return False
    queue.delete(f"nightly:{job}:{(night - timedelta(days=1)).isoformat()}")
    return True


@huey.periodic_task(crontab(hour="21", minute="30"),  # type: ignore[untyped-decorator]
                    priority=PERIODIC_PRIORITY)
def retention_job() -> tuple[int, int] | None:
    """Every night (02:30 Almaty): delete old audio, pseudonymise old numbers (README); None
    where another worker ran it tonight."""
    if not first_tonight(huey, "retention"):
        return None
    outcome = run_retention(current_runtime()).outcome
    assert outcome is not None
    return outcome.recordings_deleted, outcome.callers_pseudonymised


@huey.periodic_task(crontab(hour="22", minute="0"),  # type: ignore[untyped-decorator]
                    priority=PERIODIC_PRIORITY)
def backup_job() -> str | None:
    """Every night (03:00 Almaty, after retention): a snapshot into HOTLINE_BACKUP_DIR, when
    it is set (hotline.backup); the snapshot's folder, or None (no folder set here, or another
    worker made tonight's)."""
    settings = current_runtime().settings
    if settings.backup_dir is None or not first_tonight(huey, "backup"):
        return None
    try:
        snapshot = make_backup(settings, settings.backup_dir, keep=settings.backup_keep)
    except (BackupError, OSError):
        log.exception("the nightly backup failed; the next night tries again")
        note_outcome(current_runtime().sessions, made=False)
        return None
    note_outcome(current_runtime().sessions, made=True)
    return str(snapshot.path)
