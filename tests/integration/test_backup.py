"""Backups: `hotline backup` and the nightly job write a snapshot that restores to a working
hotline (the questions, their audio, people's prompt recordings, the pseudonym key), on SQLite
while another connection is writing, and on PostgreSQL with pg_dump/pg_restore."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from psycopg import sql
from sqlalchemy import select, text

from hotline import health as health_checks
from hotline import jobs
from hotline.backup import BackupError, make_backup, snapshots
from hotline.config import ConfigError, Settings
from storage import health
from storage.db import current_revision, upgrade
from storage.models import Caller, Question, Recording, utcnow
from tests.conftest import POSTGRES_SERVER, _postgres_admin
from tests.support import free_port, run_cli, runtime
from tests.workspace_support import Db

AUDIO_KEY = "recordings/2026/12/RE0001.wav"
AUDIO = b"RIFF" + bytes(range(256)) * 40
PROMPT = "kk/menu.main.wav"


@pytest.fixture
def stored(app: Flask, db: Db, settings: Settings) -> int:
    """A question with its recording's audio stored, a person's prompt recording, the key."""
    runtime(app).audio.put(AUDIO_KEY, AUDIO)
    prompt = settings.prompts_dir / PROMPT
    prompt.parent.mkdir(parents=True, exist_ok=True)
    prompt.write_bytes(b"RIFF prompt")
    prompt.with_suffix(".txt").write_text("Негізгі мәзір")
    settings.ensure_secret_key()
    with db() as session:
        question = Question(channel="voice", language="kk", topic="pension",
                            caller=Caller(phone="+77011234567"))
        question.recording = Recording(recording_sid="RE0001", call_sid="CA0001",
                                       source_url="https://api.twilio.com/x",
                                       file_path=AUDIO_KEY, download_state="stored")
        session.add(question)
        session.flush()
        return question.id


@pytest.fixture
def restored_postgres() -> Iterator[str]:
    """An empty PostgreSQL database to restore a dump into."""
    name = f"hotline_restore_{secrets.token_hex(6)}"
    with _postgres_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with _postgres_admin() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _restore(snapshot: Path, settings: Settings, tmp_path: Path,
             request: pytest.FixtureRequest) -> Settings:
    """Do what README "Backups" says: a new data folder from the snapshot, the database back."""
    data = tmp_path / "restored"
    data.mkdir()
    for name in ("audio", "prompts"):
        if (snapshot / name).exists():
            shutil.copytree(snapshot / name, data / name)
    shutil.copyfile(snapshot / "secret_key", data / "secret_key")
    if settings.database_url.startswith("sqlite"):
        shutil.copyfile(snapshot / "hotline.sqlite3", data / "hotline.sqlite3")
        url = f"sqlite:///{data / 'hotline.sqlite3'}"
    else:
        name = request.getfixturevalue("restored_postgres")
        subprocess.run(["pg_restore", "--no-owner", "-h", "127.0.0.1", "-U", "postgres",
                        "-d", name, str(snapshot / "hotline.pgdump")], check=True)
        url = POSTGRES_SERVER + name
    return settings.override(data_dir=data, database_url=url)


def test_a_snapshot_restores_to_a_working_hotline(
        app: Flask, db: Db, settings: Settings, stored: int, tmp_path: Path,
        make_app: Callable[[Settings], Flask], request: pytest.FixtureRequest) -> None:
    result = run_cli(app, ["backup", "--to", str(tmp_path / "backups")])
    assert result.exit_code == 0, result.output
    [snapshot] = snapshots(tmp_path / "backups")
    assert f"snapshot: {snapshot}" in result.output
    assert "files: 3 copied" in result.output  # the audio, the prompt and its text
    assert "secret_key: copied" in result.output
    assert (snapshot / "secret_key").stat().st_mode & 0o777 == 0o600
    # The snapshot (numbers, recordings, the key) is this user's only, whatever the umask.
    assert snapshot.stat().st_mode & 0o777 == 0o700
    manifest = (snapshot / "MANIFEST.txt").read_text()
    if settings.database_url.startswith("sqlite"):
        assert "database: sqlite, 1 questions" in manifest
    else:
        assert "database: postgresql" in manifest
    # Something happens after the backup: it is not in the restored hotline.
    with db() as session:
        session.add(Question(channel="sms", language="ru", text="после копии"))
    restored = make_app(_restore(snapshot, settings, tmp_path, request))
    rt = runtime(restored)
    with rt.sessions() as session:
        questions = session.scalars(select(Question)).all()
        assert [(q.id, q.topic) for q in questions] == [(stored, "pension")]
        assert questions[0].caller is not None
        assert questions[0].caller.phone == "+77011234567"
    assert rt.audio.read(AUDIO_KEY) == AUDIO
    assert (rt.settings.prompts_dir / PROMPT).read_bytes() == b"RIFF prompt"
    assert (rt.settings.prompts_dir / "kk/menu.main.txt").read_text() == "Негізгі мәзір"
    assert rt.pseudonym_key == runtime(app).pseudonym_key


def _readme_restore_of_files() -> list[str]:
    """README's restore lines for the files (in "Installing on a server"), as written."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines()]
    wanted = [line for line in lines if line.startswith(
        ("rm -rf /var/lib/hotline/audio", 'cp -a "$S/audio"'))]
    assert len(wanted) == 2, wanted
    return [line.split("#")[0].strip() for line in wanted]


@pytest.mark.parametrize("audio_store", ["folder", "database"])
def test_a_snapshot_without_audio_or_prompts_has_both_folders(
        settings: Settings, tmp_path: Path, audio_store: str) -> None:
    """A new hotline, retention that deleted every recording, or the audio in the database:
    the data folder has no audio/ (nor prompts/), and the snapshot has both, empty, so the
    README's `rm -rf` then `cp -a "$S/audio" "$S/prompts"` restores instead of failing
    halfway, with the old folders already gone."""
    settings = settings.override(audio_store=audio_store)
    settings.make_data_dir()
    assert not settings.audio_dir.exists() and not settings.prompts_dir.exists()
    snapshot = make_backup(settings, tmp_path / "backups", keep=1).path
    assert sorted(p.name for p in snapshot.iterdir() if p.is_dir()) == ["audio", "prompts"]
    assert list((snapshot / "audio").iterdir()) == []
    assert list((snapshot / "prompts").iterdir()) == []
    # The README's lines, with a folder of this test for /var/lib/hotline.
    live = tmp_path / "var-lib-hotline"
    (live / "audio").mkdir(parents=True)
    (live / "audio" / "old.wav").write_bytes(b"RIFF old")
    (live / "prompts").mkdir()
    script = "\n".join(_readme_restore_of_files()).replace("/var/lib/hotline", str(live))
    done = subprocess.run(["sh", "-ec", script], env={"S": str(snapshot), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert list((live / "audio").iterdir()) == [] and list((live / "prompts").iterdir()) == []


def test_sqlite_is_copied_whole_while_another_connection_writes(
        app: Flask, settings: Settings, stored: int, tmp_path: Path) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL: pg_dump reads one snapshot by design")
    database = settings.database_url.removeprefix("sqlite:///")
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO questions (channel, status, transcription_state, "
                       "repeat_caller, urgent, callback_attempts, created_at, priority_at) "
                       "SELECT channel, status, transcription_state, repeat_caller, urgent, "
                       "callback_attempts, created_at, priority_at FROM questions")
        # The write is not committed: the copy is the database without it, and is whole.
        snapshot = make_backup(settings, tmp_path / "backups", keep=3)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert snapshot.questions == 1
    copy = sqlite3.connect(snapshot.path / "hotline.sqlite3")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        copy.close()
    assert not (snapshot.path / "hotline.sqlite3-wal").exists()


def test_unchanged_files_are_linked_and_old_snapshots_go(
        app: Flask, settings: Settings, stored: int, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    first = make_backup(settings, folder, keep=2, now=utcnow() - timedelta(days=2))
    assert (first.files_copied, first.files_linked) == (3, 0)
    runtime(app).audio.put("recordings/2026/12/RE0002.wav", AUDIO + b"new")
    second = make_backup(settings, folder, keep=2, now=utcnow() - timedelta(days=1))
    assert (second.files_copied, second.files_linked) == (1, 3)
    assert ((second.path / "audio" / AUDIO_KEY).stat().st_ino
            == (first.path / "audio" / AUDIO_KEY).stat().st_ino)  # one copy on the disk
    # Retention deleted a recording meanwhile: the next snapshots no longer hold it, and the
    # oldest snapshot beyond keep goes.
    runtime(app).audio.delete(AUDIO_KEY)
    third = make_backup(settings, folder, keep=2)
    assert not (third.path / "audio" / AUDIO_KEY).exists()
    assert third.removed == [first.path]
    assert snapshots(folder) == [second.path, third.path]


def test_a_backup_folder_without_hard_links_gets_copies(
        app: Flask, settings: Settings, stored: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup folder on a file system with no hard links (vfat, a network share; here
    os.link refuses as such a share does, EPERM): the second night's unchanged files are
    copied, and the snapshot is made, rather than every snapshot after the first failing."""
    folder = tmp_path / "backups"
    first = make_backup(settings, folder, keep=7, now=utcnow() - timedelta(days=1))
    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    second = make_backup(settings, folder, keep=7)
    assert (second.files_copied, second.files_linked) == (first.files_copied, 0)
    assert (second.path / "audio" / AUDIO_KEY).read_bytes() == \
        (first.path / "audio" / AUDIO_KEY).read_bytes()
    assert snapshots(folder) == [first.path, second.path]


def test_a_failed_backup_leaves_no_snapshot(app: Flask, settings: Settings, stored: int,
                                            tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    broken = settings.override(
        database_url=("sqlite:///" + str(tmp_path / "missing.sqlite3"))
        if settings.database_url.startswith("sqlite") else
        POSTGRES_SERVER + "hotline_no_such_database")
    with pytest.raises(BackupError):
        make_backup(broken, folder, keep=3)
    assert list(folder.iterdir()) == []  # neither a snapshot nor a partial folder
    refused = run_cli(app, ["backup", "--to", str(settings.data_dir / "backups")])
    assert refused.exit_code == 1
    assert "is inside the data folder" in refused.output
    nowhere = run_cli(app, ["backup"])
    assert nowhere.exit_code == 1
    assert "--to DIR, or set HOTLINE_BACKUP_DIR" in nowhere.output


@pytest.mark.postgres
def test_a_backup_without_its_database_says_so_in_one_line(tmp_path: Path) -> None:
    """The database does not answer: pg_dump fails, and recording that outcome in the same
    database fails too. The command prints its own error and one logged line about the
    outcome, not two tracebacks (139 lines) from note_outcome."""
    port = free_port()
    env = {**os.environ, "HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "data"),
           "SECRET_KEY": "backup-test-secret", "REDIS_URL": "",
           "DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/hotline"}
    done = subprocess.run([Path(sys.executable).parent / "hotline", "backup", "--to",
                           str(tmp_path / "backups")], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    [outcome] = [line for line in done.stderr.splitlines() if "health check" in line]
    assert outcome.startswith(
        "the backup's outcome (failed) could not be written for the health check: ")
    assert f"port {port} failed: Connection refused" in outcome  # libpq's own first line
    assert "Error: backup failed: pg_dump failed: " in done.stderr
    assert len(done.stderr.splitlines()) <= 5, done.stderr  # the demo warning, these, libpq's


def test_the_nightly_job_backs_up_when_a_folder_is_set(
        make_app: Callable[[Settings], Flask], settings: Settings, tmp_path: Path) -> None:
    task = jobs.backup_job.task_class()
    assert task.validate_datetime(datetime(2026, 3, 1, 22, 0))  # 03:00 in Almaty
    assert not task.validate_datetime(datetime(2026, 3, 1, 21, 30))
    make_app(settings)
    assert jobs.backup_job.call_local() is None  # no HOTLINE_BACKUP_DIR: none made
    folder = tmp_path / "nightly"
    make_app(settings.override(backup_dir=folder, backup_keep=2))
    made = jobs.backup_job.call_local()
    assert snapshots(folder) == [Path(made)]
    # The same night's job enqueued by another worker's scheduler: no second snapshot.
    assert jobs.backup_job.call_local() is None
    assert snapshots(folder) == [Path(made)]
    assert Settings.from_env({"HOTLINE_BACKUP_DIR": str(folder),
                              "HOTLINE_BACKUP_KEEP": "14"}).backup_keep == 14
    assert Settings.from_env({}).backup_dir is None


def test_the_database_copy_has_every_table(app: Flask, settings: Settings, stored: int,
                                          tmp_path: Path) -> None:
    """The copy is the whole schema (Alembic's version too), not only the questions."""
    snapshot = make_backup(settings, tmp_path / "backups", keep=1)
    with runtime(app).engine.connect() as live:
        version = live.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    if settings.database_url.startswith("sqlite"):
        copy = sqlite3.connect(snapshot.path / "hotline.sqlite3")
        try:
            assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == (
                version,)
        finally:
            copy.close()
    else:
        listing = subprocess.run(["pg_restore", "--list", str(snapshot.path / "hotline.pgdump")],
                                 capture_output=True, text=True, check=True).stdout
        assert "TABLE DATA public alembic_version" in listing
        assert "TABLE DATA public questions" in listing


def test_the_health_check_tells_when_backups_fail_or_stop(
        make_app: Callable[[Settings], Flask], settings: Settings, tmp_path: Path) -> None:
    """With HOTLINE_BACKUP_DIR set: none yet passes (a new hotline); a backup made passes; a
    failed one fails until the next is made; one older than BACKUP_LATE_AFTER fails. The
    outcome is in the database, so a web machine that has no backup folder checks it too."""
    app = make_app(settings.override(backup_dir=tmp_path / "nightly"))
    jobs.sweep(runtime(app))

    def backup_check(application: Flask) -> dict[str, Any]:
        checks = health_checks.as_json(health_checks.check(runtime(application)))["checks"]
        return dict(checks["backup"])

    assert backup_check(app)["ok"] and backup_check(app)["detail"] == (
        "no backup yet (the first at 03:00 Almaty)")
    # None ever made, and a question waited longer than a night for one: no longer fine.
    with runtime(app).sessions() as session, session.begin():
        waited = utcnow() - timedelta(hours=31)
        session.add(Question(channel="voice", language="kk", created_at=waited,
                             priority_at=waited))
    never = backup_check(app)
    assert not never["ok"] and never["detail"] == (
        "no backup has ever been made, and the first question came 31 h ago: is "
        "HOTLINE_BACKUP_DIR set on a worker?")
    assert jobs.backup_job.call_local() is not None
    made = backup_check(app)
    assert made["ok"] and 0 <= made["last_backup_seconds"] <= 60
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    assert run_cli(app, ["backup", "--to", str(in_the_way / "backups")]).exit_code == 1
    failed = backup_check(app)
    assert not failed["ok"]
    assert failed["detail"].startswith("the last backup failed 0 h ago: see the worker's log")
    web = make_app(settings)  # another machine: no backup folder, the same database
    answer = app.test_client().get("/health/ready")
    assert answer.status_code == 503
    assert [name for name, check in answer.get_json()["checks"].items() if not check["ok"]] == [
        "backup"]
    assert not backup_check(web)["ok"]
    assert run_cli(app, ["backup", "--to", str(tmp_path / "by-hand")]).exit_code == 0
    assert backup_check(web)["ok"]
    with runtime(app).sessions() as session, session.begin():
        health.beat(session, health.BACKUP_FAILED, utcnow() - timedelta(hours=32))
        health.beat(session, health.BACKUP, utcnow() - timedelta(hours=31))
    late = backup_check(web)
    assert not late["ok"] and late["detail"] == (
        "the last backup was made 31 h ago (limit 30 h): is the worker making them?")


def test_a_refused_folder_is_not_recorded_as_a_failed_backup(
        make_app: Callable[[Settings], Flask], settings: Settings, tmp_path: Path) -> None:
    """`hotline backup --to` a folder inside the data folder is refused before any backup
    starts: the error is the command's, the health check still sees the last backup made (it
    said "the last backup failed 0 h ago: see the worker's log", and the log had nothing)."""
    app = make_app(settings.override(backup_dir=tmp_path / "nightly"))
    jobs.sweep(runtime(app))  # the worker's heartbeat: the other checks pass
    assert run_cli(app, ["backup"]).exit_code == 0
    refused = run_cli(app, ["backup", "--to", str(settings.data_dir / "backups")])
    assert refused.exit_code == 1
    assert "is inside the data folder" in refused.output
    assert not (settings.data_dir / "backups").exists()
    with runtime(app).sessions() as session:
        assert health.last_beat(session, health.BACKUP_FAILED) is None
    checks = health_checks.as_json(health_checks.check(runtime(app)))["checks"]
    assert checks["backup"]["ok"], checks["backup"]
    answer = app.test_client().get("/health/ready")
    assert answer.status_code == 200, answer.get_json()
    assert refused.output.startswith("Error: backup refused: the backup folder")


def test_keeping_no_snapshot_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="HOTLINE_BACKUP_KEEP must be 1 or more, not 0"):
        Settings.from_env({"HOTLINE_BACKUP_KEEP": "0", "TWILIO_AUTH_TOKEN": "t"}).check()
    Settings.from_env({"HOTLINE_BACKUP_KEEP": "1", "TWILIO_AUTH_TOKEN": "t"}).check()


def test_a_new_data_folder_and_key_are_this_users_only(settings: Settings,
                                                       tmp_path: Path) -> None:
    fresh = settings.override(data_dir=tmp_path / "new" / "data", secret_key="")
    key = fresh.ensure_secret_key()
    assert len(key) == 64 and fresh.ensure_secret_key() == key  # made once, then read
    assert fresh.data_dir.stat().st_mode & 0o777 == 0o700
    assert (fresh.data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    # One the operator made already is left as it is.
    (tmp_path / "theirs").mkdir(mode=0o750)
    (tmp_path / "theirs").chmod(0o750)
    settings.override(data_dir=tmp_path / "theirs").make_data_dir()
    assert (tmp_path / "theirs").stat().st_mode & 0o777 == 0o750


def test_the_first_command_on_a_new_machine_makes_the_data_folder_private(
        tmp_path: Path) -> None:
    """`hotline db upgrade` runs first (make run, the Procfile's release): the folder it makes
    for the SQLite database, which will hold residents' numbers, is this user's only; so is a
    database's own folder outside the data folder. It says what it did: created, upgraded from
    an older release's revision, or nothing to do."""
    env = {"HOTLINE_DEMO": "1", "HOTLINE_DATA_DIR": str(tmp_path / "new" / "data"),
           "DATABASE_URL": "", "REDIS_URL": ""}
    made = run_cli(None, ["db", "upgrade"], env=env)
    assert made.exit_code == 0
    # What it did, for the deployment's log: created, then nothing to do.
    head = current_revision(f"sqlite:///{tmp_path / 'new' / 'data' / 'hotline.sqlite3'}")
    assert made.output == f"database created at revision {head}\n"
    again = run_cli(None, ["db", "upgrade"], env=env).output
    assert again == f"database is up to date (revision {head})\n"
    assert (tmp_path / "new" / "data" / "hotline.sqlite3").is_file()
    assert (tmp_path / "new" / "data").stat().st_mode & 0o777 == 0o700
    elsewhere = tmp_path / "db" / "hotline.sqlite3"
    env = {**env, "DATABASE_URL": f"sqlite:///{elsewhere}"}
    upgrade(env["DATABASE_URL"], "0014")  # a database of an older release
    assert elsewhere.parent.stat().st_mode & 0o777 == 0o700
    assert run_cli(None, ["db", "upgrade"], env=env).output == (
        f"database upgraded from revision 0014 to {head}\n")
