"""Where recorded questions' audio lives: a folder on this machine, or the database.

A recording is stored under a key, the relative path kept in `Recording.file_path`
(`recordings/YYYY/MM/<RecordingSid>.wav`, see hotline.recordings.relative_audio_path). Two
stores keep audio under such keys, chosen by `HOTLINE_AUDIO_STORE`:

- FolderAudioStore (`folder`, the default): the file `<audio folder>/<key>`, exactly as before
  this module existed. Every process that downloads, transcribes, serves or deletes audio must
  see the same folder, so web and worker processes share one machine (or one network disk).
- DatabaseAudioStore (`database`): one row of the `audio_blobs` table per key (the bytes in a
  BLOB on SQLite, bytea on PostgreSQL). Web and worker processes on different machines share
  nothing but the database, which they share already. A recording at 8 kHz is about 1 MB a
  minute as WAV (16-bit) and a question is at most 120 s, so a row is at most ~2 MB; the
  download refuses more than 50 MB.

Every method takes an optional session. A database store then works inside that transaction
(its writes commit or roll back with the caller's changes: the download job stores the blob
and marks the recording stored in one transaction; retention deletes the blob and marks the
recording deleted in one). Without a session it uses a transaction of its own. On SQLite the
caller must pass its session whenever it has one open that may have written: a second
connection would wait for the first one's lock. A folder store ignores the session.

Keys are checked the same way by both stores: relative, no `..`, no empty parts, at most 255
characters (UnsafeAudioKey otherwise). The folder store also refuses a key whose file, symbolic
links resolved, lies outside its folder.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage.db import unit_of_work
from storage.models import DOWNLOAD_STORED, AudioBlob, Recording, utcnow

log = logging.getLogger(__name__)

AUDIO_STORES = ("folder", "database")
MAX_KEY_LENGTH = 255


class UnsafeAudioKey(ValueError):
    """A key that could name something outside the store (absolute, `..`, too long)."""


class AudioMissing(FileNotFoundError):
    """Nothing is stored under the key."""


@dataclass(frozen=True)
class StoredAudio:
    """One stored recording, ready to send: a file on this machine, or its bytes.

    path is set by the folder store (send it by path: the server can use sendfile and an
    ETag from the file); data by the database store. open() gives a binary file either way.
    """

    key: str
    size: int
    modified: datetime | None
    path: Path | None = None
    data: bytes | None = None

    def open(self) -> BinaryIO:
        """Return the audio as a binary file positioned at its start (the caller closes it)."""
        if self.path is not None:
            return self.path.open("rb")
        assert self.data is not None
        return io.BytesIO(self.data)


class AudioStore(Protocol):
    """What the download job, transcription, the audio route and retention need of a store."""

    kind: str

    def put(self, key: str, source: Path | bytes, *, session: Session | None = None) -> int:
        """Store source (a file or bytes) under key, replacing what was there; return bytes."""
        ...

    def get(self, key: str, *, session: Session | None = None) -> StoredAudio | None:
        """Return the audio under key, or None when nothing (or nothing safe) is there."""
        ...

    def read(self, key: str, *, session: Session | None = None) -> bytes:
        """Return the bytes under key (AudioMissing when there are none)."""
        ...

    def size(self, key: str, *, session: Session | None = None) -> int | None:
        """Return the size in bytes of the audio under key, or None when there is none."""
        ...

    def exists(self, key: str, *, session: Session | None = None) -> bool:
        """Tell whether audio is stored under key."""
        ...

    def delete(self, key: str, *, session: Session | None = None) -> bool:
        """Remove the audio under key; True if something was removed, False if none was there.

        Raises OSError (folder) when it cannot be removed, UnsafeAudioKey for a bad key.
        """
        ...

    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A context manager giving a file on this machine with the audio (for Vosk).

        The folder store gives its own file (do not change it); the database store a
        temporary copy, removed on exit. AudioMissing when nothing is stored under key.
        """
        ...

    def locate(self, key: str) -> str:
        """Where the audio under key is, in words for people (`hotline queue`)."""
        ...


def check_key(key: str) -> str:
    """Return key if it is a safe relative key; raise UnsafeAudioKey otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH or "\\" in key or "\x00" in key:
        raise UnsafeAudioKey(key)
    if any(part in ("", ".", "..") for part in key.split("/")):  # also "/x", "x/", "a//b"
        raise UnsafeAudioKey(key)
    return key


class FolderAudioStore:
    """Audio as files under one folder: `<folder>/<key>` (the behaviour before the stores)."""

    kind = "folder"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        """The file for key, symbolic links resolved; UnsafeAudioKey if it leads outside."""
        check_key(key)
        root = self.folder.resolve()
        target = (root / key).resolve()
        if not target.is_relative_to(root) or target == root:
            raise UnsafeAudioKey(key)
        return target

    def put(self, key: str, source: Path | bytes, *, session: Session | None = None) -> int:
        """Write the file atomically: a temporary file in the same folder, then a rename."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    with source.open("rb") as given:
                        while chunk := given.read(1024 * 1024):
                            out.write(chunk)
                size = out.tell()
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size

    def get(self, key: str, *, session: Session | None = None) -> StoredAudio | None:
        """The file, if key is safe and a regular file is there."""
        try:
            target = self.path(key)
        except UnsafeAudioKey:
            log.warning("audio path outside the audio folder refused: %r", key)
            return None
        try:
            if not target.is_file():
                return None
            stat = target.stat()
        except OSError:
            return None
        return StoredAudio(key=key, size=stat.st_size,
                           modified=datetime.fromtimestamp(stat.st_mtime, UTC), path=target)

    def read(self, key: str, *, session: Session | None = None) -> bytes:
        """The file's bytes."""
        found = self.get(key)
        if found is None or found.path is None:
            raise AudioMissing(key)
        return found.path.read_bytes()

    def size(self, key: str, *, session: Session | None = None) -> int | None:
        """The file's size."""
        found = self.get(key)
        return None if found is None else found.size

    def exists(self, key: str, *, session: Session | None = None) -> bool:
        """Whether the file is there."""
        return self.get(key) is not None

    def delete(self, key: str, *, session: Session | None = None) -> bool:
        """Unlink the file (Path.unlink: a directory or a permission problem raises OSError)."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """The stored file itself."""
        found = self.get(key)
        if found is None or found.path is None:
            raise AudioMissing(key)
        yield found.path

    def locate(self, key: str) -> str:
        """The file's path (as `hotline queue` printed it before the stores)."""
        return str(self.folder / key)


class DatabaseAudioStore:
    """Audio as rows of `audio_blobs` in the hotline's database (SQLite BLOB, PostgreSQL bytea)."""

    kind = "database"

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with unit_of_work(self.sessions) as own:
                yield own

    def put(self, key: str, source: Path | bytes, *, session: Session | None = None) -> int:
        """Insert the row, or replace the bytes of an existing one (one statement, no race)."""
        check_key(key)
        data = source if isinstance(source, bytes) else source.read_bytes()
        now = utcnow()
        with self._session(session) as db:
            dialect = db.get_bind().dialect.name
            values = {"key": key, "data": data, "size": len(data), "created_at": now}
            if dialect == "postgresql":
                pg = postgresql.insert(AudioBlob).values(**values)
                db.execute(pg.on_conflict_do_update(
                    index_elements=[AudioBlob.key],
                    set_={"data": pg.excluded.data, "size": pg.excluded.size,
                          "created_at": pg.excluded.created_at}))
            elif dialect == "sqlite":
                lite = sqlite.insert(AudioBlob).values(**values)
                db.execute(lite.on_conflict_do_update(
                    index_elements=[AudioBlob.key],
                    set_={"data": lite.excluded.data, "size": lite.excluded.size,
                          "created_at": lite.excluded.created_at}))
            else:  # pragma: no cover - the hotline runs on SQLite and PostgreSQL only
                db.execute(delete(AudioBlob).where(AudioBlob.key == key))
                db.add(AudioBlob(**values))
            db.flush()
        return len(data)

    def get(self, key: str, *, session: Session | None = None) -> StoredAudio | None:
        """The row's bytes, size and time of storing."""
        try:
            check_key(key)
        except UnsafeAudioKey:
            log.warning("unsafe audio key refused: %r", key)
            return None
        with self._session(session) as db:
            row = db.execute(select(AudioBlob.data, AudioBlob.size, AudioBlob.created_at)
                             .where(AudioBlob.key == key)).one_or_none()
        if row is None:
            return None
        data = bytes(row.data)
        return StoredAudio(key=key, size=len(data), modified=row.created_at, data=data)

    def read(self, key: str, *, session: Session | None = None) -> bytes:
        """The row's bytes."""
        found = self.get(key, session=session)
        if found is None or found.data is None:
            raise AudioMissing(key)
        return found.data

    def size(self, key: str, *, session: Session | None = None) -> int | None:
        """The stored size, without reading the bytes."""
        check_key(key)
        with self._session(session) as db:
            size: int | None = db.scalar(select(AudioBlob.size).where(AudioBlob.key == key))
        return size

    def exists(self, key: str, *, session: Session | None = None) -> bool:
        """Whether a row has this key."""
        check_key(key)
        with self._session(session) as db:
            found = db.scalar(select(func.count()).select_from(AudioBlob)
                              .where(AudioBlob.key == key))
        return bool(found)

    def delete(self, key: str, *, session: Session | None = None) -> bool:
        """Delete the row."""
        check_key(key)
        with self._session(session) as db:
            result = db.execute(delete(AudioBlob).where(AudioBlob.key == key)
                                .execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A temporary copy with the key's suffix (Vosk's decoder reads a file), then removed."""
        data = self.read(key)
        fd, name = tempfile.mkstemp(prefix="hotline-audio-", suffix=PurePosixPath(key).suffix)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def locate(self, key: str) -> str:
        """The table and key."""
        return f"database:audio_blobs/{key}"


def open_audio_store(kind: str, *, folder: Path, sessions: sessionmaker[Session]) -> AudioStore:
    """The store HOTLINE_AUDIO_STORE names: `folder` (under folder) or `database` (sessions)."""
    if kind == "folder":
        return FolderAudioStore(folder)
    if kind == "database":
        return DatabaseAudioStore(sessions)
    raise ValueError(f"unknown audio store {kind!r}: use one of {', '.join(AUDIO_STORES)}")


def other_audio_store(kind: str, *, folder: Path,
                      sessions: sessionmaker[Session]) -> AudioStore:
    """The store HOTLINE_AUDIO_STORE does not name: where `hotline audio copy` left the source
    copies when the install switched over (retention deletes audio from both)."""
    other = {"folder": "database", "database": "folder"}.get(kind)
    if other is None:
        raise ValueError(f"unknown audio store {kind!r}: use one of {', '.join(AUDIO_STORES)}")
    return open_audio_store(other, folder=folder, sessions=sessions)


@dataclass
class CopyOutcome:
    """What copy_stored_audio did, key by key."""

    copied: list[str]
    present: list[str]
    missing: list[str]


def stored_keys(session: Session) -> list[str]:
    """Keys of every recording whose audio is stored (download_state 'stored'), oldest first."""
    return [key for key in session.scalars(
        select(Recording.file_path).where(Recording.download_state == DOWNLOAD_STORED,
                                          Recording.file_path.is_not(None))
        .order_by(Recording.id)) if key]


def copy_stored_audio(keys: list[str], source: AudioStore, target: AudioStore) -> CopyOutcome:
    """Copy each key's audio from source to target (switching HOTLINE_AUDIO_STORE).

    A key already in target with the same size is left alone, so the copy can run again
    after an interruption; a key source does not have is listed as missing. Nothing is
    deleted from source. Each key is its own transaction (a database target).
    """
    outcome = CopyOutcome([], [], [])
    for key in keys:
        found = source.get(key)
        if found is None:
            outcome.missing.append(key)
            continue
        if target.size(key) == found.size:
            outcome.present.append(key)
            continue
        with found.open() as stream:
            target.put(key, stream.read())
        outcome.copied.append(key)
    return outcome
