"""`hotline retention`: delete old audio of closed questions and pseudonymise old numbers.

The worker runs the same every night (hotline.jobs.retention_job); `--dry-run` lists what would
go (counts, question ids and caller ids: never a phone number) and changes nothing.

Twilio keeps its own copy of every recording. Once our copy of a recording's audio is deleted,
the run deletes Twilio's too (REST DELETE Recordings/RE…; delete_twilio_copies), up to
TWILIO_DELETES_PER_RUN a run; one that fails is tried again by the next run; a 404 means
Twilio has none. Not in demo mode (its recordings never were at Twilio) and not without
TWILIO_ACCOUNT_SID.

The plan is made in a read-only transaction (storage.db.unit_of_work), and carried out in
batches of BATCH_SIZE recordings or callers, one transaction each: on SQLite every write waits
for the transaction that writes (the webhooks among them), and one transaction for everything
held them for half a minute with 10,000 callers due. Each batch checks its items again
(storage.retention.apply), so what changed since the plan (a caller who called, a question
not closed) is left alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext
from requests import RequestException
from twilio.base.exceptions import TwilioException, TwilioRestException

from hotline.config import Settings
from hotline.outbound_sms import close_twilio_client, make_twilio_client
from hotline.runtime import Runtime
from hotline.twilio_glue import RECORDING_SID
from storage import retention as store
from storage.audio_store import other_audio_store
from storage.db import unit_of_work
from storage.models import utcnow

log = logging.getLogger(__name__)
# Recordings or callers per transaction when retention is carried out.
BATCH_SIZE = 100


# Twilio copies deleted in one run at most (one REST call each); the next night goes on.
TWILIO_DELETES_PER_RUN = 1000
# Failures in a row after which a run stops asking Twilio (it is down, or refuses us).
TWILIO_FAILURES_IN_A_ROW = 5
# A run stops asking Twilio after this long (a slow Twilio must not hold a worker thread for
# hours: each call may wait REST_TIMEOUT); the next night goes on.
TWILIO_SECONDS_PER_RUN = 600.0


@dataclass
class TwilioCleanup:
    """What a run did to Twilio's copies: deleted (or found gone), and failed."""

    deleted: int = 0
    failed: int = 0
    skipped: str | None = None  # why none was asked for, or why it stopped


@dataclass(frozen=True)
class RetentionRun:
    """What a run found due, and (unless it was a dry run) what it did."""

    plan: store.Plan
    outcome: store.Outcome | None
    twilio: TwilioCleanup | None = None
    twilio_due: int | None = None  # a dry run: recordings whose copy at Twilio would go


def run_retention(rt: Runtime, *, dry_run: bool = False, now: datetime | None = None,
                  batch_size: int = BATCH_SIZE) -> RetentionRun:
    """Find what the retention settings say must go, and remove it unless dry_run, in batches
    of batch_size recordings or callers, one transaction each.

    A batch that fails raises, and what the batches before it did stays done (the next run
    goes on from there)."""
    settings = rt.settings
    now = now or utcnow()
    with unit_of_work(rt.sessions, read_only=True) as session:
        todo = store.plan(session, now, settings.audio_retention_days,
                          settings.phone_retention_days)
        if dry_run:
            # Twilio's copies a run would delete: of the audio going now, and of that gone
            # before.
            sids = [*store.recording_sids(session, [a.recording_id for a in todo.audio]),
                    *(sid for _id, sid in store.twilio_copies_due(session,
                                                                  TWILIO_DELETES_PER_RUN))]
            at_twilio = (sum(1 for sid in sids if RECORDING_SID.fullmatch(sid))
                         if _asks_twilio(settings) else 0)
            return RetentionRun(todo, None, twilio_due=at_twilio)
    key = settings.ensure_secret_key().encode()
    outcome = store.Outcome()
    # The copies `hotline audio copy` left in the other store go too (none: nothing to do).
    leftovers = [other_audio_store(settings.audio_store, folder=settings.audio_dir,
                                   sessions=rt.sessions)]
    stores = [rt.audio, *leftovers]
    # Files an earlier run could not remove (or did not reach: stopped after a commit).
    with unit_of_work(rt.sessions, read_only=True) as session:
        left = store.files_to_remove(session)
    store.remove_files(rt.sessions, left, stores, outcome)
    for batch in store.batches(todo, batch_size):
        with unit_of_work(rt.sessions) as session:
            store.apply(session, batch, audio=rt.audio, key=key, now=now, outcome=outcome,
                        leftovers=leftovers)
        if batch.audio:
            # After the commit: a batch that failed has removed no file its rows still name.
            with unit_of_work(rt.sessions, read_only=True) as session:
                pending = store.files_to_remove(
                    session, [item.recording_id for item in batch.audio])
            store.remove_files(rt.sessions, pending, stores, outcome)
    log.info("retention: %d audio files removed, %d recordings marked deleted, "
             "%d callers and %d numbers of no caller record pseudonymised",
             outcome.files_removed, outcome.recordings_deleted, outcome.callers_pseudonymised,
             outcome.strays_pseudonymised)
    for problem in outcome.skipped:
        log.warning("retention skipped %s", problem)
    return RetentionRun(todo, outcome, delete_twilio_copies(rt, now))


def _asks_twilio(settings: Settings) -> bool:
    """Whether retention deletes Twilio's copies: a real account (not demo mode)."""
    return not settings.demo and bool(settings.twilio_account_sid)


def delete_twilio_copies(rt: Runtime, now: datetime) -> TwilioCleanup:
    """Delete at Twilio the recordings whose audio retention deleted here (module doc)."""
    settings = rt.settings
    cleanup = TwilioCleanup()
    if not _asks_twilio(settings):
        cleanup.skipped = ("demo mode" if settings.demo else "no TWILIO_ACCOUNT_SID")
        return cleanup
    with unit_of_work(rt.sessions, read_only=True) as session:
        due = store.twilio_copies_due(session, TWILIO_DELETES_PER_RUN)
    if not due:
        return cleanup
    client = make_twilio_client(settings)
    in_a_row = 0
    try:
        deadline = time.monotonic() + TWILIO_SECONDS_PER_RUN
        for recording_id, sid in due:
            if time.monotonic() > deadline:
                cleanup.skipped = f"time limit ({TWILIO_SECONDS_PER_RUN:.0f} s)"
                break
            at_twilio = bool(RECORDING_SID.fullmatch(sid))  # else Twilio has no copy of it
            why = None
            if at_twilio:
                try:
                    client.recordings(sid).delete()
                except TwilioRestException as error:
                    if error.status in (401, 403):
                        cleanup.failed += 1
                        cleanup.skipped = f"Twilio refused the account ({error.status})"
                        log.warning("retention: Twilio refused to delete recordings (%s): "
                                    "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                                    error.status)
                        break
                    if error.status != 404:  # 404: deleted already (by hand, in the console)
                        why = f"HTTP {error.status}"
                except (TwilioException, RequestException) as error:
                    why = type(error).__name__
            if why is not None:
                cleanup.failed += 1
                log.warning("retention: recording %s not deleted at Twilio (%s); the next "
                            "run tries again", recording_id, why)
                in_a_row += 1
                if in_a_row >= TWILIO_FAILURES_IN_A_ROW:
                    cleanup.skipped = f"{in_a_row} failures in a row"
                    break
                continue
            in_a_row = 0
            with unit_of_work(rt.sessions) as session:
                store.twilio_copy_deleted(session, recording_id, now)
            cleanup.deleted += at_twilio
    finally:
        close_twilio_client(client)
    log.info("retention: %d recordings deleted at Twilio, %d failed", cleanup.deleted,
             cleanup.failed)
    return cleanup


def _ids(ids: list[int] | tuple[int, ...]) -> str:
    return ", ".join(f"#{i}" for i in ids) if ids else "none"


def describe(run: RetentionRun, audio_days: int, phone_days: int) -> list[str]:
    """Say in lines what a run found and did; never a phone number."""
    todo = run.plan
    lines = []
    if audio_days > 0:
        files = sum(1 for item in todo.audio if item.file_path)
        lines.append(f"audio of questions closed more than {audio_days} days ago: "
                     f"{len(todo.audio)} recordings ({files} files); questions "
                     f"{_ids([item.question_id for item in todo.audio])}")
    else:
        lines.append("audio retention is off (HOTLINE_AUDIO_RETENTION_DAYS=0)")
    if phone_days > 0:
        lines.append(f"numbers not heard from for {phone_days} days, every question closed "
                     f"that long: {len(todo.callers)} callers")
        lines.extend(f"  caller {due.caller_id}: questions {_ids(due.question_ids)}"
                     for due in todo.callers)
        if todo.strays:
            lines.append(f"numbers on calls and SMS of no caller record, not heard from for "
                         f"{phone_days} days: {len(todo.strays)}")
    else:
        lines.append("number pseudonymisation is off (HOTLINE_PHONE_RETENTION_DAYS=0)")
    if run.outcome is None:
        if run.twilio_due:
            lines.append(f"Twilio's copies: up to {run.twilio_due} recordings to delete there")
        lines.append("dry run: nothing was changed")
    else:
        done = run.outcome
        lines.append(f"done: {done.files_removed} files removed, {done.recordings_deleted} "
                     f"recordings marked deleted, {done.callers_pseudonymised} callers "
                     f"pseudonymised ({done.callers_merged} joined to an earlier record)"
                     + (f", {done.strays_pseudonymised} numbers of no caller record"
                        if done.strays_pseudonymised else ""))
        lines.extend(f"skipped {problem}" for problem in done.skipped)
    if run.twilio is not None and (run.twilio.deleted or run.twilio.failed):
        lines.append(f"Twilio's copies: {run.twilio.deleted} recordings deleted there, "
                     f"{run.twilio.failed} failed (the next run tries again)"
                     + (f"; stopped: {run.twilio.skipped}" if run.twilio.skipped else ""))
    return lines


@click.command("retention")
@click.option("--dry-run", is_flag=True, help="List what would go; change nothing.")
@with_appcontext
def retention(dry_run: bool) -> None:
    """Delete audio of long-closed questions and pseudonymise long-unused phone numbers."""
    rt = cast(Runtime, current_app.extensions["hotline"])
    run = run_retention(rt, dry_run=dry_run)
    for line in describe(run, rt.settings.audio_retention_days,
                         rt.settings.phone_retention_days):
        click.echo(line)
    if run.outcome is not None and run.outcome.skipped:
        raise SystemExit(1)
