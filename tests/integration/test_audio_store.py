"""The audio store contract (storage.audio_store), on both stores and both databases.

Every test runs for the folder store and the database store, each on SQLite and PostgreSQL
(the folder store ignores the database, but runs beside it all the same). Nothing is mocked:
files on disk, rows in a real database.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hotline.config import ConfigError, Settings
from storage.audio_store import (
    AudioMissing,
    AudioStore,
    DatabaseAudioStore,
    FolderAudioStore,
    UnsafeAudioKey,
    open_audio_store,
)
from storage.db import unit_of_work
from storage.models import AudioBlob, Caller, Question, Recording
from tests.support import run_cli, runtime

KEY = "recordings/2026/11/RE0123456789abcdef0123456789abcdef.wav"
# A WAV-like header and every byte value, so a shifted or truncated copy shows.
AUDIO = b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 64


@pytest.fixture(params=["folder", "database"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          session_factory: sessionmaker[Session]) -> AudioStore:
    """Each store, on each database (session_factory is migrated SQLite or PostgreSQL)."""
    return open_audio_store(request.param, folder=tmp_path / "audio", sessions=session_factory)


def test_put_then_read_size_exists_get(store: AudioStore) -> None:
    assert not store.exists(KEY)
    assert store.size(KEY) is None
    assert store.get(KEY) is None
    assert store.put(KEY, AUDIO) == len(AUDIO)
    assert store.exists(KEY)
    assert store.size(KEY) == len(AUDIO)
    assert store.read(KEY) == AUDIO
    found = store.get(KEY)
    assert found is not None and found.key == KEY and found.size == len(AUDIO)
    assert found.modified is not None
    with found.open() as stream:
        stream.seek(100)
        assert stream.read(50) == AUDIO[100:150]


def test_put_from_a_file_and_replace(store: AudioStore, tmp_path: Path) -> None:
    source = tmp_path / "download.wav"
    source.write_bytes(AUDIO)
    assert store.put(KEY, source) == len(AUDIO)
    assert store.read(KEY) == AUDIO
    assert source.read_bytes() == AUDIO  # the source is left as it was
    shorter = AUDIO[:1000]
    assert store.put(KEY, shorter) == 1000  # a second download replaces the first
    assert store.read(KEY) == shorter and store.size(KEY) == 1000


def test_local_path_gives_a_file_with_the_audio(store: AudioStore) -> None:
    store.put(KEY, AUDIO)
    with store.local_path(KEY) as path:
        assert path.suffix == ".wav"  # decoders look at the suffix
        assert path.read_bytes() == AUDIO
    if store.kind == "database":
        assert not path.exists()  # the temporary copy is gone
    else:
        assert path.exists()  # the folder's own file


def test_delete_then_nothing_is_there(store: AudioStore) -> None:
    store.put(KEY, AUDIO)
    assert store.delete(KEY) is True
    assert store.delete(KEY) is False  # gone already
    assert not store.exists(KEY) and store.size(KEY) is None and store.get(KEY) is None
    with pytest.raises(AudioMissing):
        store.read(KEY)
    with pytest.raises(AudioMissing), store.local_path(KEY):
        pass
    # AudioMissing is a FileNotFoundError: callers that handled a missing file still do.
    assert issubclass(AudioMissing, FileNotFoundError)


def test_keys_are_separate(store: AudioStore) -> None:
    other = KEY.replace("RE01", "RE02")
    store.put(KEY, AUDIO)
    store.put(other, b"RIFF....WAVEother")
    store.delete(other)
    assert store.read(KEY) == AUDIO


@pytest.mark.parametrize("key", [
    "", "/etc/passwd", "../secret.wav", "recordings/../../secret.wav", "recordings//x.wav",
    "recordings/./x.wav", "recordings/", "a\\b.wav", "nul\x00.wav", "x" * 256,
])
def test_unsafe_keys_are_refused(store: AudioStore, key: str) -> None:
    with pytest.raises(UnsafeAudioKey):
        store.put(key, AUDIO)
    with pytest.raises(UnsafeAudioKey):
        store.delete(key)
    assert store.get(key) is None


def test_about_two_minutes_of_telephone_audio_round_trips(store: AudioStore) -> None:
    # 120 s at 8 kHz, 16-bit: the longest recording the hotline takes (bytea on PostgreSQL).
    audio = b"RIFF\x00\x00\x00\x00WAVE" + os.urandom(120 * 8000 * 2)
    store.put(KEY, audio)
    assert store.size(KEY) == len(audio)
    assert store.read(KEY) == audio


# --- what only one store does -------------------------------------------------------------


def test_folder_store_keeps_the_files_where_they_always_were(tmp_path: Path) -> None:
    store = FolderAudioStore(tmp_path / "audio")
    store.put(KEY, AUDIO)
    assert (tmp_path / "audio" / KEY).read_bytes() == AUDIO
    assert store.locate(KEY) == str(tmp_path / "audio" / KEY)
    assert not list((tmp_path / "audio").rglob("*.part"))  # no temporary file left over


def test_folder_store_refuses_a_symbolic_link_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(AUDIO)
    store = FolderAudioStore(tmp_path / "audio")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "recordings").symlink_to(outside)
    assert store.get("recordings/secret.wav") is None
    with pytest.raises(UnsafeAudioKey):
        store.delete("recordings/secret.wav")
    assert (outside / "secret.wav").exists()


def test_folder_store_delete_of_a_directory_raises(tmp_path: Path) -> None:
    store = FolderAudioStore(tmp_path / "audio")
    (tmp_path / "audio" / KEY).mkdir(parents=True)
    with pytest.raises(OSError):
        store.delete(KEY)


def test_database_store_writes_with_the_callers_transaction(
        session_factory: sessionmaker[Session]) -> None:
    store = DatabaseAudioStore(session_factory)
    # Put inside a transaction that rolls back: nothing is stored.
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        store.put(KEY, AUDIO, session=session)
        assert store.exists(KEY, session=session)
        raise RuntimeError("the caller's other change failed")
    assert not store.exists(KEY)
    # Put inside a transaction that commits: stored; a delete that rolls back keeps it.
    with unit_of_work(session_factory) as session:
        store.put(KEY, AUDIO, session=session)
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        assert store.delete(KEY, session=session)
        raise RuntimeError("rolled back")
    assert store.read(KEY) == AUDIO
    with unit_of_work(session_factory) as session:
        rows = session.scalar(select(func.count()).select_from(AudioBlob))
        size = session.scalar(select(AudioBlob.size).where(AudioBlob.key == KEY))
    assert (rows, size) == (1, len(AUDIO))
    assert store.locate(KEY) == f"database:audio_blobs/{KEY}"


def test_database_store_local_copies_are_removed_even_on_error(
        session_factory: sessionmaker[Session]) -> None:
    store = DatabaseAudioStore(session_factory)
    store.put(KEY, AUDIO)
    with pytest.raises(RuntimeError), store.local_path(KEY) as path:
        raise RuntimeError("the decoder failed")
    assert not path.exists()


# --- the setting --------------------------------------------------------------------------


def test_the_setting_chooses_the_store() -> None:
    assert Settings.from_env({}).audio_store == "folder"
    assert Settings.from_env({"HOTLINE_AUDIO_STORE": " Database "}).audio_store == "database"
    wrong = Settings.from_env({"HOTLINE_AUDIO_STORE": "s3", "TWILIO_AUTH_TOKEN": "x"})
    with pytest.raises(ConfigError, match="HOTLINE_AUDIO_STORE"):
        wrong.check()


def test_an_unknown_store_is_refused(tmp_path: Path,
                                     session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="unknown audio store"):
        open_audio_store("s3", folder=tmp_path, sessions=session_factory)


# --- switching stores: `hotline audio copy` -----------------------------------------------


def _stored_recording(session: Session, key: str) -> None:
    caller = Caller(phone=f"+7701{abs(hash(key)) % 10**7:07d}", language="ru")
    session.add(caller)
    session.flush()
    question = Question(caller_id=caller.id, channel="voice", language="ru")
    session.add(question)
    session.flush()
    session.add(Recording(recording_sid=PurePosixPath(key).stem, question_id=question.id,
                          call_sid="CA" + "0" * 32, source_url="https://api.twilio.com/x",
                          file_path=key, download_state="stored"))


def test_audio_copy_moves_existing_recordings_into_the_database_and_back(
        make_app: Callable[[Settings], Flask], settings: Settings) -> None:
    app = make_app(settings.override(audio_store="database"))
    rt = runtime(app)
    folder = FolderAudioStore(settings.audio_dir)
    keys = [KEY, KEY.replace("RE01", "RE02"), KEY.replace("RE01", "RE03")]
    with unit_of_work(rt.sessions) as session:
        for key in keys:
            _stored_recording(session, key)
    folder.put(keys[0], AUDIO)
    folder.put(keys[1], AUDIO[:500])  # keys[2]'s file was lost before the switch
    first = run_cli(app, ["audio", "copy", "--to", "database"])
    assert first.exit_code == 1, first.output
    assert "2 copied, 0 there already, 1 missing in the folder store" in first.output
    assert f"missing: {keys[2]}" in first.output
    assert rt.audio.read(keys[0]) == AUDIO and rt.audio.read(keys[1]) == AUDIO[:500]
    assert folder.exists(keys[0])  # the source is kept
    folder.put(keys[2], AUDIO)  # found again
    second = run_cli(app, ["audio", "copy", "--to", "database"])
    assert second.exit_code == 0, second.output
    assert "1 copied, 2 there already, 0 missing" in second.output
    # And back into an empty folder.
    for key in keys:
        folder.delete(key)
    back = run_cli(app, ["audio", "copy", "--to", "folder"])
    assert "3 copied" in back.output and "HOTLINE_AUDIO_STORE is database" in back.output
    assert folder.read(keys[1]) == AUDIO[:500]
