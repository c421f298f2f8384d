"""The `hotline` command: Flask's own commands plus the hotline's."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click
import requests
from flask import Flask, current_app
from flask.cli import FlaskGroup, NoAppException, with_appcontext
from sqlalchemy.exc import OperationalError, ProgrammingError

from flows.content import ContentError, load_content
from hotline.config import LOCAL_TIME, ConfigError, Settings
from hotline.prompts import PromptRenderError
from hotline.runtime import Runtime


def _create_app() -> Flask:
    from hotline.app import create_app

    try:
        return create_app()
    except (ConfigError, ContentError) as exc:
        # Flask's own "no app" error: `hotline --help`, which loads the app to list commands,
        # prints it as one line above the help instead of a traceback (HotlineGroup.invoke
        # turns it into a ClickException for a command that needed the app).
        raise NoAppException(str(exc)) from exc


def _runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["hotline"])


class HotlineGroup(FlaskGroup):
    """Flask's command group; a setting or content the hotline cannot run with, found by any
    command (the worker reads its settings as it starts), and a database that cannot be
    reached or was never migrated, are a one-line error, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, ContentError) as exc:
            raise click.ClickException(str(exc)) from exc
        except NoAppException as exc:  # _create_app's: a one-line error, exit status 1
            raise click.ClickException(exc.message) from exc
        except (OperationalError, ProgrammingError) as exc:
            # The driver's own first line says which: "connection ... refused", "no such
            # table: users", "permission denied for table questions".
            said = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise click.ClickException(
                f"the database could not be used: {said}. Is DATABASE_URL right and the "
                "server running? A database never set up needs `hotline db upgrade`.") from exc


@click.group(cls=HotlineGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """Halyq Uni hotline: run it, check its content, work its queue.

    Commands that need the app (prompts, queue, recordings) load it from the environment;
    the others (db, flows check, call) work even when the app would refuse to start.
    """


def _register_subcommands() -> None:
    from hotline.cli_audio import audio
    from hotline.cli_backup import backup
    from hotline.cli_models import models
    from hotline.cli_retention import retention
    from hotline.cli_users import users

    main.add_command(audio)
    main.add_command(backup)
    main.add_command(models)
    main.add_command(retention)
    main.add_command(users)


_register_subcommands()


# -- database -------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade", with_appcontext=False)
def db_upgrade() -> None:
    """Bring the database schema up to date."""
    from storage.db import current_revision, upgrade

    settings = Settings.from_env()
    # The first command on a new machine (make run, the Procfile's release): the data folder
    # it makes for the SQLite file is private (0700), as the app would have made it.
    settings.make_data_dir()
    before = current_revision(settings.database_url)
    upgrade(settings.database_url)
    after = current_revision(settings.database_url)
    # What a deployment did, for its log: made, migrated, or nothing to do.
    if before is None:
        click.echo(f"database created at revision {after}")
    elif before != after:
        click.echo(f"database upgraded from revision {before} to {after}")
    else:
        click.echo(f"database is up to date (revision {after})")


# -- content and prompts --------------------------------------------------------------------

@main.group()
def flows() -> None:
    """The phone tree's content."""


@flows.command("check", with_appcontext=False)
@click.option("--content", "content_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Content folder (default: HOTLINE_CONTENT_DIR or the packaged content).")
def flows_check(content_dir: Path | None) -> None:
    """Validate every content file; exit non-zero naming file and key of each problem."""
    content_dir = content_dir or Settings.from_env().content_dir
    try:
        content = load_content(content_dir)
    except ContentError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        raise SystemExit(1) from exc
    for warning in content.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"content OK: {len(content.languages)} languages, {len(content.menus)} menus, "
        f"{len(content.topics)} topics ({content.status})"
    )


@main.group()
def prompts() -> None:
    """Prompt audio files."""


@prompts.command("render")
@click.option("--language", "languages", multiple=True, default=("kk",), show_default=True,
              help="Languages to render (Kazakh always needs audio; Russian can use <Say>).")
@click.option("--force", is_flag=True, help="Render again even where audio exists.")
@click.option("--rate", default=120, show_default=True, help="espeak-ng words per minute.")
@with_appcontext
def prompts_render(languages: tuple[str, ...], force: bool, rate: int) -> None:
    """Render missing prompts offline with espeak-ng, slowly, until a person records them.

    espeak-ng or sox missing, or failing, is the one-line error PromptRenderError says (which
    tool, what to install), exit 1, as for `prompts add-recording`: not a traceback."""
    rt = _runtime()
    total = 0
    for language in languages:
        try:
            written = rt.prompts.render_missing(rt.flow.all_prompts(language), force=force,
                                                rate=rate)
        except PromptRenderError as error:
            raise click.ClickException(str(error)) from error
        total += len(written)
        click.echo(f"{language}: {len(written)} prompts rendered into {rt.prompts.directory}")
    if not total:
        click.echo("every prompt already has audio")
    for language in languages:
        for prompt in rt.flow.all_prompts(language):
            state = rt.prompts.recording_state(prompt)
            if state == "outdated":
                click.echo(f"{language} {prompt.key}: the person's recording was made for "
                           "another text; the current text's rendered audio plays until it is "
                           "recorded again (hotline prompts add-recording)")
            elif state == "unlabelled":
                click.echo(f"{language} {prompt.key}: a person's recording without the text "
                           "it was made for: played whatever the content says (install it with "
                           "hotline prompts add-recording to have it checked)")


@prompts.command("add-recording")
@click.argument("language")
@click.argument("key")
@click.argument("wav", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def prompts_add_recording(language: str, key: str, wav: Path) -> None:
    """Install a person's recording of one prompt (KEY as in the content files), with the text
    it was made for: when the text changes, the recording stops playing until recorded again."""
    rt = _runtime()
    if language not in rt.flow.content.language_codes:
        raise click.ClickException(f"no language {language!r} in the content")
    if key not in rt.flow.content.prompts[language]:
        raise click.ClickException(f"no prompt {key!r} in the {language} content")
    prompt = rt.flow.prompt(language, key)
    try:
        target = rt.prompts.add_recording(prompt, wav)
    except PromptRenderError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{language} {key}: {target} now plays, for the text: {prompt.text}")


# -- the queue and recordings ---------------------------------------------------------------

@main.command("queue")
@click.option("--json", "as_json", is_flag=True, help="One JSON document for machines.")
@with_appcontext
def queue(as_json: bool) -> None:
    """List waiting questions, oldest first."""
    from storage.db import unit_of_work
    from storage.questions import waiting_questions

    rt = _runtime()
    rows: list[dict[str, Any]] = []
    with unit_of_work(rt.sessions) as session:
        for question in waiting_questions(session):
            recording = question.recording
            audio = None
            if recording is not None and recording.file_path:
                audio = rt.audio.locate(recording.file_path)
            rows.append({
                "id": question.id,
                "created": question.created_at.astimezone(LOCAL_TIME).isoformat(),
                "phone": question.caller.phone if question.caller else None,
                "channel": question.channel,
                "language": question.language,
                "topic": question.topic,
                "duration": recording.duration if recording else None,
                "download": recording.download_state if recording else None,
                "error": recording.last_error if recording else None,
                "audio": audio,
                "transcription": question.transcription_state,
                "transcription_error": question.transcription_error,
                "transcript": question.transcript.text if question.transcript else None,
                "text": question.text,  # what the resident wrote, for SMS questions
            })
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("no questions are waiting")
        return
    for row in rows:
        seconds = f"{row['duration']} s" if row["duration"] is not None else "-"
        where = row["audio"] or f"audio {row['download']}: {row['error'] or 'not downloaded yet'}"
        click.echo(
            f"#{row['id']:<5} {row['created'][:16]}  {row['phone'] or 'no number':<13} "
            f"{row['language'] or '??'}  {row['topic'] or 'general':<18} {seconds:>6}  {where}"
        )
        if row["text"] is not None:
            click.echo(f"       wrote: {row['text']}")
            continue
        heard = row["transcript"] or row["transcription_error"] or ""
        click.echo(f"       transcript {row['transcription']}{': ' if heard else ''}{heard}")


@main.command("health")
@click.option("--json", "as_json", is_flag=True, help="The document GET /health/ready answers.")
@with_appcontext
def health_command(as_json: bool) -> None:
    """Check the database, the job queue, the worker and what waits how long (exit code 1
    when a check fails: for cron and monitoring; hotline.health says what each check means).

    A database that answers but has no schema (never migrated: no Alembic revision) is the
    one-line hint `users list` and `queue` give (HotlineGroup), exit 1, with or without
    --json, instead of "ok database", a failed backlogs check and its logged traceback. A
    database that does not answer is left to the checks ("FAIL database"), as before."""
    from hotline.health import as_json as health_json
    from hotline.health import check

    if _schema_missing(_runtime()):
        raise click.ClickException(
            "the database could not be used: it has no tables (never migrated). Is "
            "DATABASE_URL right? A database never set up needs `hotline db upgrade`.")
    checks = check(_runtime())
    if as_json:
        click.echo(json.dumps(health_json(checks), ensure_ascii=False, indent=2))
    else:
        for one in checks:
            click.echo(f"{'ok  ' if one.ok else 'FAIL'}  {one.name:<18} {one.detail}")
    if not all(one.ok for one in checks):
        sys.exit(1)


def _schema_missing(rt: Runtime) -> bool:
    """Whether the database answers and has no migration revision (no alembic_version); False
    when it cannot be asked, for the checks to say so."""
    from sqlalchemy.exc import SQLAlchemyError

    from storage.db import revision_of, unit_of_work

    try:
        with unit_of_work(rt.sessions, read_only=True) as session:
            revision = revision_of(session.connection())
    except SQLAlchemyError:
        return False
    return revision is None


@main.group()
def recordings() -> None:
    """Recorded questions' audio."""


@recordings.command("retry")
@with_appcontext
def recordings_retry() -> None:
    """Fetch again every recording that is not stored yet (failed, refused or pending)."""
    from hotline.recordings import download_recording
    from storage.db import unit_of_work
    from storage.questions import recordings_to_fetch

    rt = _runtime()
    with unit_of_work(rt.sessions) as session:
        todo = [(r.id, r.recording_sid) for r in recordings_to_fetch(session)]
    if not todo:
        click.echo("nothing to fetch")
        return
    failed = 0
    for recording_id, sid in todo:
        state = download_recording(rt, recording_id)
        failed += state != "stored"
        click.echo(f"{sid}: {state}")
    if failed:
        raise SystemExit(1)


@recordings.command("catch-up")
@click.option("--hours", type=click.IntRange(min=1), default=None,
              help="How far back to look (default HOTLINE_RECORDING_CATCHUP_HOURS).")
@with_appcontext
def recordings_catch_up(hours: int | None) -> None:
    """Store and fetch the question recordings that Twilio has and no webhook stored (after an
    outage: the periodic job does the same every 10 minutes)."""
    from twilio.base.exceptions import TwilioException

    from hotline.recording_catchup import catch_up_recordings, enabled, our_number
    from hotline.recordings import download_recording

    rt = _runtime()
    number = rt.settings.twilio_phone_number
    if number and not rt.settings.demo and our_number(rt) is None:
        raise click.ClickException(
            f"TWILIO_PHONE_NUMBER {number} is not a valid phone number: the catch-up finds "
            "the hotline's calls by it. Set the hotline's number, like +77172123456.")
    if not enabled(rt, hours):
        raise click.ClickException(
            "nothing to catch up from: this needs a real Twilio account (not demo mode), "
            "TWILIO_PHONE_NUMBER, and HOTLINE_RECORDING_CATCHUP_HOURS or --hours above 0")
    try:
        outcome = catch_up_recordings(rt, hours=hours)
    except (TwilioException, requests.RequestException) as error:
        raise click.ClickException(f"could not list Twilio's recordings: {error}") from error
    click.echo(f"{outcome.listed} question recordings at Twilio in the window, "
               f"{len(outcome.added)} not stored before, {len(outcome.not_ours)} of calls to "
               f"another number (left alone), {len(outcome.failed)} could not be stored")
    failed = len(outcome.failed)
    for recording_id, sid in outcome.to_fetch:
        state = download_recording(rt, recording_id)
        failed += state != "stored"
        click.echo(f"{sid}: {state}")
    if failed:
        raise SystemExit(1)


# -- transcription --------------------------------------------------------------------------

@main.command("transcribe", with_appcontext=False)
@click.argument("files", nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--language", type=click.Choice(["kk", "ru"]), default="ru", show_default=True,
              help="Which language's model decodes FILES.")
@click.option("--json", "as_json", is_flag=True, help="The full result: words, times, confidence.")
@click.option("--pending", is_flag=True,
              help="Transcribe every recorded question without a transcript (pending, failed, "
                   "no model), e.g. after installing a model.")
def transcribe(files: tuple[Path, ...], language: str, as_json: bool, pending: bool) -> None:
    """Transcribe audio files (or the questions waiting for a transcript) offline with Vosk."""
    from speech.errors import SpeechError

    settings = Settings.from_env()
    if pending:
        _transcribe_pending(settings)
        return
    if not files:
        raise click.UsageError("give audio files, or --pending")
    from speech.models import registry_from_folder
    from speech.transcriber import Transcriber

    transcriber = Transcriber(registry_from_folder(
        settings.models_dir, {"kk": settings.vosk_model_kk, "ru": settings.vosk_model_ru}))
    results: list[dict[str, Any]] = []
    failed = 0
    with click.progressbar(files, label="transcribing", file=sys.stderr,
                           hidden=len(files) < 2) as bar:
        for path in bar:
            try:
                result = transcriber.transcribe(path, language)
            except SpeechError as exc:
                failed += 1
                results.append({"file": str(path), "error": str(exc)})
                continue
            results.append({"file": str(path), **result.to_dict()})
    if as_json:
        click.echo(json.dumps(results if len(files) > 1 else results[0], ensure_ascii=False,
                              indent=2))
    else:
        for row in results:
            prefix = f"{row['file']}: " if len(files) > 1 else ""
            if "error" in row:
                click.echo(f"{prefix}error: {row['error']}", err=True)
            else:
                click.echo(f"{prefix}{row['text']}")
    if failed:
        raise SystemExit(1)


def _transcribe_pending(settings: Settings) -> None:
    from hotline.runtime import build_runtime
    from hotline.transcription import TranscriptionRetry, transcribe_question
    from storage.db import unit_of_work
    from storage.models import (
        TRANSCRIPTION_FAILED,
        TRANSCRIPTION_NO_MODEL,
        TRANSCRIPTION_PENDING,
    )
    from storage.transcripts import questions_to_transcribe

    try:
        rt = build_runtime(settings)
    except (ConfigError, ContentError) as exc:
        raise click.ClickException(str(exc)) from exc
    retry = (TRANSCRIPTION_FAILED, TRANSCRIPTION_NO_MODEL)
    states: dict[str, int] = {}
    try:
        with unit_of_work(rt.sessions) as session:
            ids = questions_to_transcribe(session, (TRANSCRIPTION_PENDING, *retry))
        if not ids:
            click.echo("no question is waiting for a transcript")
            return
        with click.progressbar(ids, label="transcribing", file=sys.stderr) as bar:
            for question_id in bar:
                try:
                    state = transcribe_question(rt, question_id, also=retry)
                except TranscriptionRetry:
                    state = "pending (will be retried)"
                states[state] = states.get(state, 0) + 1
    finally:
        rt.dispose()
    click.echo(", ".join(f"{count} {state}" for state, count in sorted(states.items())))
    if set(states) - {"done"}:
        raise SystemExit(1)


# -- the worker -----------------------------------------------------------------------------

# How long a stopping worker (SIGTERM) waits for its running jobs before it cuts them off.
WORKER_SHUTDOWN_SECONDS = 90


@main.command("worker", with_appcontext=False)
@click.option("--workers", default=1, show_default=True, help="Worker threads.")
def worker(workers: int) -> None:
    """Run the job consumer: recording downloads, transcription, the minutely sweep."""
    from hotline import logs
    from hotline.app import warn_of_settings
    from hotline.jobs import current_runtime, huey

    logs.configure()  # times on every line; a fault that persists told once a minute
    # Fail fast on bad settings or content; say what a deployment lacks, as the web does.
    warn_of_settings(current_runtime().settings)
    # SqliteHuey is polled: an idle worker looks again within a second (Huey's default backs
    # off to 10 s, which would add up to 10 s to a caller's wait for the transcript).
    # SIGTERM (systemd, honcho, docker stop) lets running jobs finish (WORKER_SHUTDOWN_SECONDS);
    # Huey's default would cut them off (its graceful signal is SIGINT).
    huey.create_consumer(workers=workers, worker_type="thread", initial_delay=0.1,
                         backoff=1.15, max_delay=1.0, graceful_signal="TERM",
                         shutdown_timeout=WORKER_SHUTDOWN_SECONDS).run()


# -- the caller simulator -------------------------------------------------------------------

def _recording(ctx: click.Context, param: click.Parameter, value: Path | None
               ) -> tuple[Path, float] | None:
    """Check --record before the call starts: the file and its length, or a usage error.

    It takes what the hotline takes (hotline.simulator.check_recording says why): any WAV its
    transcriber reads, not an MP3 or another kind of file.
    """
    if value is None:
        return None
    from hotline.simulator import check_recording
    from speech.errors import SpeechError

    try:
        return value, check_recording(value)
    except SpeechError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


@main.command("call", with_appcontext=False)
@click.option("--url", help="Hotline base URL (default: an in-process app on this configuration).")
@click.option("--from", "caller", default="+77011234567", show_default=True,
              help="The caller's phone number.")
@click.option("--keys", help="Scripted answers, space-separated: digits, * #, '_' for silence, "
              "'rec' to speak the --record file at a recording, 'hangup'.")
@click.option("--record", "recording", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), callback=_recording,
              help="WAV file to use as the recorded question (any WAV the transcriber reads: "
              "8-32-bit, float; not MP3).")
@click.option("--end", type=click.Choice(["#", "hangup"]), default="#", show_default=True,
              help="How the caller ends the recording.")
def call(url: str | None, caller: str, keys: str | None,
         recording: tuple[Path, float] | None, end: str) -> None:
    """Call the hotline as a phone would: hear prompts, press keys, record a question."""
    from hotline.simulator import (
        HANGUP,
        SILENCE,
        FlaskTransport,
        HttpTransport,
        Input,
        MediaServer,
        PhoneSimulator,
        Speak,
        Transport,
        scripted,
    )

    settings = Settings.from_env()
    try:
        settings.check()
        flow_content = load_content(settings.content_dir)
    except (ConfigError, ContentError) as exc:
        raise click.ClickException(str(exc)) from exc
    from flows.engine import Flow

    record_file = recording[0] if recording else None
    spoken = (Speak(recording[0], end="hangup" if end == "hangup" else "#",
                    seconds=recording[1]) if recording else None)

    def token(value: str) -> Input:
        if value in ("_", "."):
            return SILENCE
        if value == "rec":
            if spoken is None:
                raise click.ClickException("'rec' needs --record FILE")
            return spoken
        return value

    def prompt(text: str, default: str) -> str:
        """The caller's answer; the end of input (Ctrl-D) or Ctrl-C hangs up, so the hotline
        hears the call end (its status callback) and the call's summary is printed."""
        try:
            return str(click.prompt(text, default=default, show_default=False))
        except (click.Abort, EOFError):
            click.echo()
            return "h"

    def ask(kind: str) -> Input:
        if kind == "record":
            hint = f"Enter to say {record_file.name}, " if record_file else ""
            answer = prompt(f"  (recording) {hint}'_' silence, 'h' hang up",
                            "" if record_file else "_")
            if answer == "h":
                return HANGUP
            return spoken if (spoken and answer == "") else SILENCE
        answer = prompt("  key (Enter = silence, h = hang up)", "")
        return HANGUP if answer == "h" else answer.strip()[:1]

    keypad: Callable[[str], Input] = (
        scripted([token(t) for t in keys.split()]) if keys is not None else ask
    )
    with MediaServer(settings.twilio_account_sid, settings.twilio_auth_token) as media:
        transport: Transport
        if url:
            base = url
            transport = HttpTransport()
        else:
            from hotline.app import create_app
            from hotline.jobs import huey

            huey.immediate = True  # in-process: downloads run inline, no worker needed
            app = create_app(settings.override(
                twilio_media_hosts=(*settings.twilio_media_hosts, media.host)))
            base = "http://hotline.local"
            transport = FlaskTransport(app)
        simulator = PhoneSimulator(
            transport, base, account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token, caller=caller,
            hotline_number=settings.twilio_phone_number or "+77000000000", media=media,
            flow=Flow(flow_content, settings.callback_days), echo=click.echo,
        )
        try:
            log = simulator.call(keypad)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach the hotline at {url}: {exc}") from exc
        if url and log.recordings:
            click.echo("waiting for the hotline's worker to fetch the recording ...")
            for sid in log.recordings:
                if not media.wait_served(sid, timeout=60):
                    click.echo(f"  {sid} was not fetched within 60 s (is the worker running?)")
    click.echo(f"call {log.call_sid} ended ({log.hung_up_by or 'no more TwiML'}); "
               f"keys {' '.join(k or '_' for k in log.pressed) or '-'}; "
               f"{len(log.recordings)} recording(s)")
    if any(status >= 400 for _url, status in log.statuses):
        sys.exit(1)
