"""`hotline retention`: delete old audio of closed questions and pseudonymise old numbers.

The worker runs the same every night (hotline.jobs.retention_job); `--dry-run` lists what would
go (counts, question ids and caller ids: never a phone number) and changes nothing.

The plan is made in a read-only transaction (storage.db.unit_of_work), and carried out in
batches of BATCH_SIZE recordings or callers, one transaction each: on SQLite every write waits
for the transaction that writes (the webhooks among them), and one transaction for everything
held them for half a minute with 10,000 callers due. Each batch checks its items again
(storage.retention.apply), so what changed since the plan (a caller who called, a question
not closed) is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext

from hotline.runtime import Runtime
from storage import retention as store
from storage.db import unit_of_work
from storage.models import utcnow

log = logging.getLogger(__name__)
# Recordings or callers per transaction when retention is carried out.
BATCH_SIZE = 100


@dataclass(frozen=True)
class RetentionRun:
    """What a run found due, and (unless it was a dry run) what it did."""

    plan: store.Plan
    outcome: store.Outcome | None


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
        return RetentionRun(todo, None)
    key = settings.ensure_secret_key().encode()
    outcome = store.Outcome()
    for batch in store.batches(todo, batch_size):
        with unit_of_work(rt.sessions) as session:
            store.apply(session, batch, audio=rt.audio, key=key, now=now, outcome=outcome)
    log.info("retention: %d audio files removed, %d recordings marked deleted, "
             "%d callers pseudonymised", outcome.files_removed, outcome.recordings_deleted,
             outcome.callers_pseudonymised)
    for problem in outcome.skipped:
        log.warning("retention skipped %s", problem)
    return RetentionRun(todo, outcome)


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
    else:
        lines.append("number pseudonymisation is off (HOTLINE_PHONE_RETENTION_DAYS=0)")
    if run.outcome is None:
        lines.append("dry run: nothing was changed")
    else:
        done = run.outcome
        lines.append(f"done: {done.files_removed} files removed, {done.recordings_deleted} "
                     f"recordings marked deleted, {done.callers_pseudonymised} callers "
                     f"pseudonymised ({done.callers_merged} joined to an earlier record)")
        lines.extend(f"skipped {problem}" for problem in done.skipped)
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
