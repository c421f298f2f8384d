"""`hotline audio copy`: move recordings' audio between the stores (HOTLINE_AUDIO_STORE).

Going from one machine to several: set HOTLINE_AUDIO_STORE=database everywhere, run
`hotline audio copy --to database` once on the machine that has the audio folder, and the
recordings stored before the switch are served and transcribed from the database too.
"""

from __future__ import annotations

from typing import cast

import click
from flask import current_app
from flask.cli import with_appcontext

from hotline.runtime import Runtime
from storage.audio_store import (
    AudioStore,
    DatabaseAudioStore,
    FolderAudioStore,
    copy_stored_audio,
    stored_keys,
)
from storage.db import unit_of_work


@click.group("audio")
def audio() -> None:
    """Recordings' audio: the audio folder or the database."""


@audio.command("copy")
@click.option("--to", "target", type=click.Choice(["database", "folder"]), required=True,
              help="Copy into the database (from <data dir>/audio), or into the folder.")
@with_appcontext
def copy(target: str) -> None:
    """Copy every stored recording's audio into the other store (the source is kept)."""
    rt = cast(Runtime, current_app.extensions["hotline"])
    folder: AudioStore = FolderAudioStore(rt.settings.audio_dir)
    database: AudioStore = DatabaseAudioStore(rt.sessions)
    source, into = (folder, database) if target == "database" else (database, folder)
    with unit_of_work(rt.sessions) as session:
        keys = stored_keys(session)
    done = copy_stored_audio(keys, source, into)
    click.echo(f"{len(done.copied)} copied, {len(done.present)} there already, "
               f"{len(done.missing)} missing in the {source.kind} store")
    for key in done.missing:
        click.echo(f"missing: {key}")
    if target != rt.settings.audio_store:
        click.echo(f"note: HOTLINE_AUDIO_STORE is {rt.settings.audio_store}; set it to "
                   f"{target} to use the copies")
    if done.missing:
        raise SystemExit(1)
