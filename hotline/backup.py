"""Backups: a consistent copy of the database and the files the hotline cannot make again.

`hotline backup` (and, with HOTLINE_BACKUP_DIR set, the worker every night at 03:00 Almaty,
after retention) writes one snapshot folder, `<backup dir>/<YYYY-MM-DD_HHMMSS>/`, holding:

- the database: on SQLite, `hotline.sqlite3`, copied with SQLite's online backup API (a
  consistent copy while calls are being written, WAL included) and checked with
  `PRAGMA integrity_check`; on PostgreSQL, `hotline.pgdump` from `pg_dump --format=custom`
  (restore with `pg_restore`);
- `audio/` (with HOTLINE_AUDIO_STORE=folder; with `database` the audio is in the database) and
  `prompts/` (people's recordings of prompts, with their texts): each file is a hard link to
  the same file of the previous snapshot when its size and time are unchanged, else a copy, so
  every snapshot is complete and an unchanged recording takes its space once. Both folders
  are in every snapshot, empty when there is nothing to copy (a new hotline, retention deleted
  all audio, HOTLINE_AUDIO_STORE=database): README's restore removes the data folder's two
  and copies the snapshot's (`cp -a "$S/audio" "$S/prompts" …`), which must not fail halfway;
- `secret_key`, when the key lives in the data folder (mode 0600): sessions and, above all, the
  pseudonyms of callers' numbers (opt-outs kept under them) need the same key after a restore;
- `MANIFEST.txt`: what the snapshot holds, in counts.

Not copied: the job queue (the sweep finds every unfinished download, transcription and SMS
from the database's rows), the Vosk models (`hotline models install`), rendered prompt audio is
copied but can be rendered again.

A snapshot is written under a `.partial-` name and renamed when complete, so a folder with a
stamp name is always whole. Only the newest HOTLINE_BACKUP_KEEP snapshots are kept: audio that
retention deleted is gone from backups after that many runs too.

Each backup, nightly or by the command, writes its outcome to the database (note_outcome), so
that `/health/ready` on any machine can tell when backups stopped (hotline.health).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from hotline.config import LOCAL_TIME, Settings
from storage import health
from storage.db import unit_of_work
from storage.models import utcnow

log = logging.getLogger(__name__)

STAMP = "%Y-%m-%d_%H%M%S"
SNAPSHOT_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{6}$")
PARTIAL = ".partial-"


def note_outcome(sessions: sessionmaker[Session], made: bool,
                 now: datetime | None = None) -> None:
    """Write whether a backup was made (made) or failed, for the health check; a database that
    does not answer is logged and otherwise ignored (the backup's own outcome stands).

    Logged as one line, the error's own first line, without a traceback: the usual reason is
    the very database the backup could not dump (`hotline backup` printed two tracebacks, 139
    lines, above its own one-line error), and the backup's error, which the command prints
    and the nightly job logs, says the rest."""
    try:
        with unit_of_work(sessions) as session:
            health.beat(session, health.BACKUP if made else health.BACKUP_FAILED,
                        now or utcnow())
    except Exception as exc:  # noqa: BLE001 - the backup itself is what matters here
        # SQLAlchemy's message of a driver's error is the driver's, then a link: the first.
        said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        log.warning("the backup's outcome (%s) could not be written for the health check: %s",
                    "made" if made else "failed", said[0] if said else type(exc).__name__)


class BackupError(RuntimeError):
    """A backup could not be made; the message says why. Nothing partial is left as whole."""


class BackupRefused(BackupError):
    """make_backup refused its own arguments before starting (keep below 1, a backup folder
    inside the data folder): nothing was read or written, so no backup failed.

    `hotline backup` does not record a refusal as a failed backup (note_outcome): the operator
    sees the one-line error at once, and /health/ready must not turn 503 over a mistyped
    `--to` while the nightly backups are fine. Everything after the checks (the folder that
    cannot be made, a database that does not answer, a disk that fills up) is a failure and
    recorded. The nightly job records a refusal too (it is a BackupError): there the folder
    is HOTLINE_BACKUP_DIR, and a refused one means no backups are being made."""


@dataclass
class Snapshot:
    """What one backup wrote."""

    path: Path
    database: str  # "sqlite" or "postgresql"
    questions: int | None = None
    files_copied: int = 0
    files_linked: int = 0
    bytes_copied: int = 0
    secret_key: bool = False
    removed: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What the snapshot holds, in lines (MANIFEST.txt and the command's output)."""
        held = (f"database: {self.database}"
                + (f", {self.questions} questions" if self.questions is not None else ""))
        return [
            f"snapshot: {self.path}",
            held,
            f"files: {self.files_copied} copied ({self.bytes_copied} bytes), "
            f"{self.files_linked} linked to the previous snapshot (unchanged)",
            "secret_key: " + ("copied" if self.secret_key else
                              "not in the data folder (SECRET_KEY is set: keep it yourself)"),
        ]


def snapshots(folder: Path) -> list[Path]:
    """The complete snapshots in folder, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and SNAPSHOT_NAME.match(p.name))


def make_backup(settings: Settings, folder: Path, *, keep: int,
                now: datetime | None = None) -> Snapshot:
    """Write a snapshot into folder, then drop the oldest beyond keep; raise BackupError
    (BackupRefused for arguments refused before anything is read or written)."""
    if keep < 1:
        raise BackupRefused("keep at least one snapshot")
    folder = folder.resolve()
    data_dir = settings.data_dir.resolve()
    if folder == data_dir or data_dir in folder.parents:
        raise BackupRefused(f"the backup folder {folder} is inside the data folder {data_dir}: "
                          "choose another disk or folder")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or utcnow()).astimezone(LOCAL_TIME).strftime(STAMP)
    final = folder / stamp
    if final.exists():
        raise BackupError(f"{final} exists already")
    previous = snapshots(folder)
    partial = folder / (PARTIAL + stamp)
    shutil.rmtree(partial, ignore_errors=True)
    # This user only (0700): the copy holds residents' numbers, recordings and the key.
    partial.mkdir(mode=0o700)
    try:
        snapshot = _write(settings, partial, previous[-1] if previous else None)
        snapshot.path = final
        (partial / "MANIFEST.txt").write_text(
            "\n".join([f"Halyq Uni hotline backup, {stamp} (Almaty)", *snapshot.lines()[1:]])
            + "\n")
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for old in snapshots(folder)[:-keep]:
        shutil.rmtree(old)
        snapshot.removed.append(old)
    # Partial folders of runs that died (a killed worker) are not snapshots: remove them.
    for stale in folder.glob(PARTIAL + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    log.info("backup written to %s: %d files copied, %d linked; %d old snapshots removed",
             final, snapshot.files_copied, snapshot.files_linked, len(snapshot.removed))
    return snapshot


def _write(settings: Settings, target: Path, previous: Path | None) -> Snapshot:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        snapshot = Snapshot(target, "sqlite")
        snapshot.questions = _sqlite_copy(Path(url.database or ""), target / "hotline.sqlite3")
    elif url.get_backend_name() == "postgresql":
        snapshot = Snapshot(target, "postgresql")
        _pg_dump(url, target / "hotline.pgdump")
    else:
        raise BackupError(f"no backup for the database {url.get_backend_name()!r}")
    if settings.audio_store == "folder":
        _mirror(settings.audio_dir, target / "audio", previous and previous / "audio", snapshot)
    _mirror(settings.prompts_dir, target / "prompts", previous and previous / "prompts",
            snapshot)
    # Both folders always, empty if need be: the restore copies them both after deleting the
    # data folder's (README, "Installing on a server"). An empty audio/ with the database
    # store restores as the empty folder the hotline would make anyway.
    for name in ("audio", "prompts"):
        (target / name).mkdir(exist_ok=True)
    key = settings.data_dir / "secret_key"
    if not settings.secret_key and key.exists():
        shutil.copyfile(key, target / "secret_key")
        (target / "secret_key").chmod(0o600)
        snapshot.secret_key = True
    return snapshot


def _sqlite_copy(source: Path, target: Path) -> int:
    """Copy the live database with SQLite's backup API, check the copy; return its questions."""
    if not source.exists():
        raise BackupError(f"no database at {source}")
    live = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(target)
    try:
        # In one step: a read transaction on the live file (in WAL mode writers go on), so
        # the copy is the database as of one moment. Steps would restart on every write.
        live.backup(copy)
        # The copy keeps no WAL of its own: one self-contained file.
        copy.execute("PRAGMA journal_mode=DELETE")
        checked = copy.execute("PRAGMA integrity_check").fetchone()
        if not checked or checked[0] != "ok":
            raise BackupError(f"the copy of the database failed its integrity check: {checked}")
        return int(copy.execute("SELECT count(*) FROM questions").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy the database: {exc}") from exc
    finally:
        copy.close()
        live.close()


def _pg_dump(url: URL, target: Path) -> None:
    """Dump the database with pg_dump (custom format: compressed, for pg_restore)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (Debian: postgresql-client)")
    # The connection goes in libpq's environment variables, not on the command line, where
    # other users of the machine could read a password.
    env = {**os.environ, "PGDATABASE": url.database or ""}
    for name, value in (("PGHOST", url.host), ("PGPORT", url.port), ("PGUSER", url.username),
                        ("PGPASSWORD", url.password), ("PGSSLMODE", url.query.get("sslmode"))):
        if value is not None:
            env[name] = str(value)
    done = subprocess.run([pg_dump, "--format=custom", "--no-owner", f"--file={target}"],
                          env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[-500:]}")


def _mirror(source: Path, target: Path, previous: Path | None, snapshot: Snapshot) -> None:
    """Copy source's files into target; an unchanged file (size and time) is a hard link to
    the previous snapshot's copy, or copied where the backup folder's file system has no
    hard links (vfat, a network share: EPERM, EOPNOTSUPP). Files that vanish while copying
    (retention) are skipped."""
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix == ".part":
            continue  # a download or write in progress (renamed into place when complete)
        relative = path.relative_to(source)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            stat = path.stat()
            earlier = previous / relative if previous else None
            if earlier is not None and earlier.is_file():
                seen = earlier.stat()
                if (seen.st_size == stat.st_size and int(seen.st_mtime) == int(stat.st_mtime)
                        and _linked(earlier, destination)):
                    snapshot.files_linked += 1
                    continue
            shutil.copy2(path, destination)
        except FileNotFoundError:
            continue
        snapshot.files_copied += 1
        snapshot.bytes_copied += stat.st_size


def _linked(earlier: Path, destination: Path) -> bool:
    """Hard-link destination to earlier; False where the file system refuses (then copy)."""
    try:
        os.link(earlier, destination)
    except FileNotFoundError:
        raise
    except OSError:
        return False
    return True
