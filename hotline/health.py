"""Is the hotline doing its work? For an operator's monitoring, not for a load balancer.

`GET /health` says only that the web process answers (a load balancer keeps sending calls to a
process whose database is down: it answers them with the spoken apology). `GET /health/ready`
and `hotline health` check what a resident's question goes through after the call, each with
a limit past which someone must look:

- the database answers, and the job queue (SQLite file or Redis) answers;
- the worker's sweep ran within WORKER_SILENT_AFTER (it runs every minute; a stopped worker
  stops downloads, transcriptions and SMS without any error in the web logs);
- no recording has waited for its download longer than 2 × HOTLINE_STALE_SECONDS (the sweep
  asks again after one), and none that Twilio reported in the last GIVEN_UP_ALERT is one no
  job will fetch again (refused, or failed on every try: it waits for `hotline recordings
  retry`);
- no question has waited for its transcript longer than TRANSCRIPTION_LATE_AFTER since its
  audio was stored (a busy day's backlog clears well within it: bench/README.md, load
  figures);
- no open question waits for a speech model (none installed for its language: no job will
  transcribe it; `hotline models install`, then `hotline transcribe --pending`);
- no SMS has waited to be sent longer than 2 × HOTLINE_STALE_SECONDS;
- backups (where HOTLINE_BACKUP_DIR is set here, or any backup was ever made): the last one
  did not fail, and was made within BACKUP_LATE_AFTER (nightly, with a few hours to spare).
  Before the first, it passes ("none yet": a new hotline is not failing) until a question has
  waited longer than BACKUP_LATE_AFTER. A backup by the command (`hotline backup --to …`)
  counts as one;
- the disk of this machine's data folder has at least DISK_FREE_MIN free (1 GB: a busy day of
  recordings); each machine checks its own.

`/health/ready` answers 200 when all pass and 503 when one fails, with each check's pass or
fail as JSON and nothing more, so it needs no login (the counts and ages would tell, at night,
that someone has just called); `hotline health` prints them too. The web answer is computed at
most once every CACHE_SECONDS per process. The ages compare the worker's clock (the heartbeat)
and the database's rows with this machine's: machines keep time (NTP), as the claims' lapsing
and the callback hours already need.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from hotline import jobs
from hotline.memo import kept
from hotline.runtime import Runtime
from storage import health
from storage.db import revision_of, unit_of_work
from storage.models import utcnow

log = logging.getLogger(__name__)

WORKER_SILENT_AFTER = timedelta(minutes=5)
TRANSCRIPTION_LATE_AFTER = timedelta(hours=1)
# A recording no job will fetch again fails the check for this long after Twilio reported
# it: long enough to be seen, and then the alarm is not stuck on one lost recording.
GIVEN_UP_ALERT = timedelta(days=3)
# Free space the data folder's disk needs: a thousand minutes of recordings (8 kHz 16-bit WAV,
# about 1 MB a minute), a busy day and more.
DISK_FREE_MIN = 1024 * 2**20
# The nightly backup runs at 03:00 Almaty: a day and some hours to spare.
BACKUP_LATE_AFTER = timedelta(hours=30)
# /health/ready answers from the last checks for this long: a monitor polling every few
# seconds, or many, cost the database one round of counting.
CACHE_SECONDS = 10.0

bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class Check:
    """One thing checked: whether it passes, what was found, and the figures."""

    name: str
    ok: bool
    detail: str
    figures: dict[str, Any]


def _age(now: datetime, since: datetime | None) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


def _backlog(name: str, waiting: health.Waiting, now: datetime, late_after: timedelta,
             what: str) -> Check:
    age = _age(now, waiting.oldest)
    figures = {"waiting": waiting.count, "oldest_seconds": age}
    if age is not None and age > late_after.total_seconds():
        return Check(name, False, f"{waiting.count} {what} waiting, the oldest for "
                     f"{age // 60} min (limit {int(late_after.total_seconds()) // 60} min)",
                     figures)
    return Check(name, True, f"{waiting.count} {what} waiting", figures)


def check(runtime: Runtime, now: datetime | None = None) -> list[Check]:
    """Run every check (see the module's docstring); a failure of one does not stop the rest."""
    return [*_service_checks(runtime, now or utcnow()), disk_check(runtime.settings.data_dir)]


def disk_check(folder: Path, needed: int | None = None) -> Check:
    """Free space where this machine keeps its data (at least needed, DISK_FREE_MIN by
    default): a recording that cannot be written waits for its download to be retried
    (nothing is lost), but nothing new is stored until there is room, so say so while there
    still is some."""
    needed = DISK_FREE_MIN if needed is None else needed
    try:
        free = shutil.disk_usage(folder).free
    except OSError as error:  # the folder is not there (yet): nothing to say of its disk
        return Check("disk", True, f"not measured ({type(error).__name__})", {})
    figures = {"free_bytes": free}
    if free < needed:
        return Check("disk", False, f"{free // 2**20} MB free in {folder} (limit "
                     f"{needed // 2**20} MB): the data folder (recordings with "
                     "HOTLINE_AUDIO_STORE=folder, the SQLite database and job queue, prompts, "
                     "models) is nearly full", figures)
    return Check("disk", True, f"{free // 2**20} MB free", figures)


def _service_checks(runtime: Runtime, now: datetime) -> list[Check]:
    late = timedelta(seconds=2 * runtime.settings.stale_seconds)
    try:
        with unit_of_work(runtime.sessions) as session:
            session.execute(text("SELECT 1"))
            revision = revision_of(session.connection())
    except Exception as error:  # noqa: BLE001 - whatever the database says, the answer is "no"
        log.warning("health: the database does not answer (%s)", type(error).__name__)
        return [Check("database", False, f"does not answer ({type(error).__name__})", {}),
                _queue_check()]
    if revision is None:
        # Answers, but never migrated (a wrong DATABASE_URL, or a step of the set-up missed):
        # one line in the log, not each backlog query's traceback on every poll.
        log.warning("health: the database has no tables (never migrated): run `hotline db "
                    "upgrade`, or check DATABASE_URL")
        return [Check("database", False, "answers, but has no tables (never migrated): run "
                      "`hotline db upgrade`, or check DATABASE_URL", {}), _queue_check()]
    checks = [Check("database", True, "answers", {})]
    try:
        with unit_of_work(runtime.sessions) as session:
            beat = health.last_beat(session, health.SWEEP)
            downloads = health.downloads_waiting(session)
            given_up = health.downloads_given_up(session)
            given_up_lately = health.downloads_given_up(session, now - GIVEN_UP_ALERT)
            transcriptions = health.transcriptions_waiting(session)
            no_model = health.waiting_for_a_model(session)
            sms = health.sms_waiting(session)
            backup_made = health.last_beat(session, health.BACKUP)
            backup_failed = health.last_beat(session, health.BACKUP_FAILED)
            first_question = (health.first_question_at(session)
                              if backup_made is None and backup_failed is None else None)
    except Exception as error:  # noqa: BLE001 - a missing table (not migrated), a timeout...
        log.exception("health: the backlogs could not be read")
        checks.append(Check("backlogs", False, f"could not be read ({type(error).__name__})",
                            {}))
        checks.append(_queue_check())
        return checks
    age = _age(now, beat)
    if age is None:
        checks.append(Check("worker", False, "no worker has run the sweep yet",
                            {"last_sweep_seconds": None}))
    else:
        silent = age > WORKER_SILENT_AFTER.total_seconds()
        checks.append(Check(
            "worker", not silent,
            f"the sweep last ran {age} s ago" + (
                f" (limit {int(WORKER_SILENT_AFTER.total_seconds())} s): is a worker "
                "running?" if silent else ""), {"last_sweep_seconds": age}))
    checks.append(_backlog("downloads", downloads, now, late, "recordings"))
    checks.append(Check(
        "given_up_downloads", given_up_lately.count == 0,
        f"{given_up.count} recordings no job will fetch again, {given_up_lately.count} of "
        f"them from the last {GIVEN_UP_ALERT.days} days" + (
            ": see the worker's log, then `hotline recordings retry`"
            if given_up_lately.count else ""),
        {"waiting": given_up.count, "lately": given_up_lately.count,
         "oldest_seconds": _age(now, given_up.oldest)}))
    checks.append(_backlog("transcriptions", transcriptions, now,
                           TRANSCRIPTION_LATE_AFTER, "questions"))
    checks.append(Check(
        "speech_models", no_model.count == 0,
        (f"{no_model.count} question waits" if no_model.count == 1 else
         f"{no_model.count} questions wait") + " for a speech model" + (
            ": install it (`hotline models install`), then `hotline transcribe --pending`"
            if no_model.count else ""),
        {"waiting": no_model.count, "oldest_seconds": _age(now, no_model.oldest)}))
    checks.append(_backlog("sms", sms, now, late, "SMS"))
    if runtime.settings.backup_dir is not None or backup_made or backup_failed:
        checks.append(_backup_check(now, backup_made, backup_failed, first_question))
    checks.append(_queue_check())
    return checks


def _backup_check(now: datetime, made: datetime | None, failed: datetime | None,
                  first_question: datetime | None) -> Check:
    made_age, failed_age = _age(now, made), _age(now, failed)
    figures = {"last_backup_seconds": made_age, "last_failure_seconds": failed_age}
    if failed is not None and (made is None or failed > made):
        return Check("backup", False, f"the last backup failed {(failed_age or 0) // 3600} h "
                     "ago: see the worker's log, then `hotline backup`", figures)
    limit = int(BACKUP_LATE_AFTER.total_seconds())
    if made_age is None:
        # Never made nor tried: fine while nothing is at risk; not once a question has waited
        # longer than a night for one (HOTLINE_BACKUP_DIR set here, but on no worker, say).
        waited = _age(now, first_question)
        if waited is not None and waited > limit:
            return Check("backup", False, f"no backup has ever been made, and the first "
                         f"question came {waited // 3600} h ago: is HOTLINE_BACKUP_DIR set on "
                         "a worker?", figures)
        return Check("backup", True, "no backup yet (the first at 03:00 Almaty)", figures)
    if made_age > limit:
        return Check("backup", False, f"the last backup was made {made_age // 3600} h ago "
                     f"(limit {limit // 3600} h): is the worker making them?", figures)
    return Check("backup", True, f"the last backup was made {made_age // 3600} h ago", figures)


def _queue_check() -> Check:
    try:
        pending = int(jobs.huey.pending_count())
    except Exception as error:  # noqa: BLE001 - Redis down, the SQLite file unreadable...
        log.warning("health: the job queue does not answer (%s)", type(error).__name__)
        return Check("queue", False, f"does not answer ({type(error).__name__})", {})
    return Check("queue", True, f"{pending} jobs queued", {"jobs": pending})


def as_json(checks: list[Check], *, figures: bool = True) -> dict[str, Any]:
    """The checks as a document; without figures (what /health/ready answers anyone), each
    check's pass or fail only."""
    return {"status": "ok" if all(c.ok for c in checks) else "failing",
            "checks": {c.name: ({"ok": c.ok, "detail": c.detail, **c.figures} if figures
                                else {"ok": c.ok}) for c in checks}}


@bp.get("/health/ready")
def ready() -> Response:
    """Each check's pass or fail as JSON: 200 when all pass, 503 when one fails.

    Without a login, so without figures: how many recordings wait and since when would say,
    at night, that someone has just called. `hotline health` on a machine shows them."""
    rt = cast(Runtime, current_app.extensions["hotline"])
    checks = kept("health", CACHE_SECONDS, lambda: check(rt))
    response = jsonify(as_json(checks, figures=False))
    response.status_code = 200 if all(c.ok for c in checks) else 503
    response.headers["Cache-Control"] = "no-store"
    return response
