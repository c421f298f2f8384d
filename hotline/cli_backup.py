"""`hotline backup`: a snapshot of the database, the audio, people's prompt recordings and the
key, into a folder (hotline.backup; README "Backups")."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext

from hotline.backup import BackupError, BackupRefused, make_backup, note_outcome
from hotline.runtime import Runtime


@click.command("backup")
@click.option("--to", "folder", type=click.Path(file_okay=False, path_type=Path),
              help="The backup folder (default HOTLINE_BACKUP_DIR).")
@click.option("--keep", type=click.IntRange(min=1),
              help="Snapshots to keep, the newest (default HOTLINE_BACKUP_KEEP, 7).")
@with_appcontext
def backup(folder: Path | None, keep: int | None) -> None:
    """Write a snapshot of everything the hotline cannot make again; exit 1 if it fails.

    A failure is recorded for the health check (note_outcome); a refusal of the arguments
    before any backup starts (BackupRefused: a folder inside the data folder) is not, since
    no backup was attempted: the error goes to the operator only."""
    runtime = cast(Runtime, current_app.extensions["hotline"])
    settings = runtime.settings
    folder = folder or settings.backup_dir
    if folder is None:
        raise click.ClickException("say where: --to DIR, or set HOTLINE_BACKUP_DIR")
    try:
        snapshot = make_backup(settings, folder, keep=keep or settings.backup_keep)
    except BackupRefused as exc:
        raise click.ClickException(f"backup refused: {exc}") from exc
    except (BackupError, OSError) as exc:
        note_outcome(runtime.sessions, made=False)
        raise click.ClickException(f"backup failed: {exc}") from exc
    note_outcome(runtime.sessions, made=True)
    for line in snapshot.lines():
        click.echo(line)
    for old in snapshot.removed:
        click.echo(f"removed the old snapshot {old.name}")
