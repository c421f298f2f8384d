"""Web and worker on "different machines": separate data folders, nothing shared but the database.

Real processes, as in test_worker.py: gunicorn serves the webhooks and the workspace with one
data folder, `hotline worker` downloads and transcribes with another, and
HOTLINE_AUDIO_STORE=database keeps the audio in the audio_blobs table. A question recorded
through the web is downloaded by the worker, transcribed there from a temporary copy, and then
served by the web process, with HTTP Range, to a logged-in consultant.

Two set-ups:
- PostgreSQL + Redis (what several machines run): the worker runs from the start and takes the
  download job from the shared Redis queue.
- SQLite + SqliteHuey: the queue file is in each process's data folder, so not even the queue
  is shared; the worker, started after the call, finds the recording with its start-up sweep
  (the database is the source of truth). SQLite itself is one machine's file: this set-up shows
  that nothing under the data folder is needed across processes, not that SQLite is shared.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask
from sqlalchemy import select

from hotline import jobs
from hotline.cli_retention import run_retention
from hotline.config import Settings
from hotline.runtime import build_runtime
from hotline.simulator import FlaskTransport, MediaServer, PhoneSimulator, Speak
from storage.db import make_engine, make_session_factory, unit_of_work
from storage.models import AudioBlob, Question, Recording, Transcript, utcnow
from storage.retention import RECORDING_DELETED
from tests.integration.test_worker import (
    BIN,
    KOREAN_MODEL,
    STALE_SECONDS,
    Processes,
    call_in,
    question_rows,
    wait_for,
)
from tests.speech_support import MOTHER_YES
from tests.support import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, CALLER, make_wav, runtime
from tests.workspace_support import PASSWORD, Browser, add_user

REDIS_AND_POSTGRES = pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres])
EMAIL = "lawyer@example.kz"


@pytest.fixture(params=["sqlite", REDIS_AND_POSTGRES])
def machines(request: pytest.FixtureRequest, tmp_path: Path,
             media: MediaServer) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """(set-up, web environment, worker environment): two data folders, one database."""
    common = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_MEDIA_HOSTS": media.host,
        "VOSK_MODEL_RU": str(KOREAN_MODEL),
        "HOTLINE_STALE_SECONDS": str(STALE_SECONDS),
        "HOTLINE_DOWNLOAD_BACKOFF": "0.2",
        "HOTLINE_QUEUE_NAME": f"hotlinetest{uuid.uuid4().hex[:8]}",
        "HOTLINE_DEMO": "",
        "HOTLINE_RECEIPT_SMS": "0",  # no Twilio REST API to send receipts through
        "PUBLIC_BASE_URL": "",
        "REDIS_URL": "",
        "HOTLINE_AUDIO_STORE": "database",
        # The same secret on both "machines", as a deployment sets it (sessions, pseudonyms).
        "SECRET_KEY": "audio-machines-test-secret",
        # A database file outside both data folders.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared-db' / 'hotline.sqlite3'}",
    }
    if request.param == "redis":
        common["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        common["DATABASE_URL"] = request.getfixturevalue("postgres_url")
        try:
            redis.Redis.from_url(common["REDIS_URL"]).ping()
        except redis.ConnectionError:
            pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)",
                        pytrace=False)
    web = {**common, "HOTLINE_DATA_DIR": str(tmp_path / "web-machine")}
    worker = {**common, "HOTLINE_DATA_DIR": str(tmp_path / "worker-machine")}
    subprocess.run([BIN / "hotline", "db", "upgrade"], env=web, check=True, capture_output=True)
    yield request.param, web, worker
    if common["REDIS_URL"]:
        client = redis.Redis.from_url(common["REDIS_URL"])
        keys = client.keys(f"huey.*{common['HOTLINE_QUEUE_NAME']}*")
        if keys:
            client.delete(*keys)


class Consultant:
    """A consultant's browser against the real server: cookies kept by hand.

    The session cookie is Secure (HOTLINE_DEMO is off) and the test server speaks plain http,
    so requests' cookie jar would not send it back; the test does.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies: dict[str, str] = {}

    def _keep(self, response: requests.Response) -> requests.Response:
        self.cookies.update(response.cookies.get_dict())
        return response

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return {"Cookie": cookie, "Accept-Language": "en", **(extra or {})}

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self._keep(requests.get(self.url + path, headers=self._headers(headers),
                                       allow_redirects=False, timeout=30))

    def login(self, email: str, password: str) -> None:
        form = self.get("/login").text
        found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form) or re.search(
            r'value="([^"]+)"[^>]*name="csrf_token"', form)
        assert found, form[:2000]
        response = self._keep(requests.post(
            self.url + "/login", data={"csrf_token": found.group(1), "email": email,
                                       "password": password},
            headers=self._headers({"Referer": f"{self.url}/login"}), allow_redirects=False,
            timeout=30))
        assert response.status_code in (302, 303), response.text[:2000]


def add_consultant(env: dict[str, str]) -> None:
    result = subprocess.run(
        [BIN / "hotline", "users", "add", EMAIL, "--role", "consultant", "--name", "Aigerim"],
        env=env, input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def stored(database: str) -> tuple[int, str, bytes] | None:
    """(question id, file_path, blob bytes) once the recording is stored, else None."""
    engine = make_engine(database)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            recording = session.scalars(select(Recording)).one_or_none()
            if recording is None or recording.download_state != "stored" \
                    or not recording.file_path:
                return None
            blob = session.scalars(select(AudioBlob.data)
                                   .where(AudioBlob.key == recording.file_path)).one()
            return recording.question_id, recording.file_path, bytes(blob)
    finally:
        engine.dispose()


def audio_files(folder: Path) -> list[str]:
    """Audio anywhere under a data folder (none is expected with the database store)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in (".wav", ".mp3", ".part"))


def test_worker_and_web_on_different_machines_share_audio_through_the_database(
    machines: tuple[str, dict[str, str], dict[str, str]], media: MediaServer, tmp_path: Path,
) -> None:
    setup, web_env, worker_env = machines
    processes = Processes(tmp_path, web_env)  # the web "machine"; its logs show both
    worker = Processes(tmp_path, worker_env)  # the worker "machine"
    try:
        url = processes.web()
        add_consultant(web_env)
        if setup == "redis":
            worker.worker()
        audio = make_wav(tmp_path / "q.wav", MOTHER_YES.text, voice=MOTHER_YES.voice,
                         speed=MOTHER_YES.speed)
        call_in(url, media, audio)
        database = web_env["DATABASE_URL"]
        if setup == "sqlite":
            # The web process queued the download in its own SqliteHuey file, which this
            # worker never reads: once the row is stale, the worker's start-up sweep takes it.
            time.sleep(STALE_SECONDS + 1)
            worker.worker()
        wait_for(lambda: question_rows(database) == [("done", 1, 1)], 120,
                 "the worker to download and transcribe", processes)
        found = stored(database)
        assert found is not None
        question_id, key, blob = found
        assert blob == audio.read_bytes()  # exactly what the media host served
        assert key.startswith("recordings/") and key.endswith(".wav")

        # Neither "machine" kept audio in its data folder: the database holds it.
        assert audio_files(Path(web_env["HOTLINE_DATA_DIR"])) == []
        assert audio_files(Path(worker_env["HOTLINE_DATA_DIR"])) == []

        # The transcript came from the worker's temporary copy of the blob.
        engine = make_engine(database)
        try:
            with unit_of_work(make_session_factory(engine)) as session:
                transcript = session.scalars(select(Transcript)).one()
                assert MOTHER_YES.words <= set(transcript.text.split())
                assert session.get(Question, question_id) is not None
        finally:
            engine.dispose()

        # The web process serves it to a consultant, whole and in ranges (the player seeks).
        consultant = Consultant(url)
        consultant.login(EMAIL, PASSWORD)
        whole = consultant.get(f"/questions/{question_id}/audio")
        assert whole.status_code == 200, whole.text[:500]
        assert whole.headers["Content-Type"] == "audio/wav"
        assert whole.headers["Accept-Ranges"] == "bytes"
        assert whole.content == blob
        part = consultant.get(f"/questions/{question_id}/audio", {"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-1099/{len(blob)}"
        assert part.content == blob[100:1100]
        tail = consultant.get(f"/questions/{question_id}/audio", {"Range": "bytes=-64"})
        assert tail.status_code == 206 and tail.content == blob[-64:]
        beyond = consultant.get(f"/questions/{question_id}/audio",
                                {"Range": f"bytes={len(blob) + 10}-"})
        assert beyond.status_code == 416
        etag = whole.headers.get("ETag")
        assert etag
        again = consultant.get(f"/questions/{question_id}/audio", {"If-None-Match": etag})
        assert again.status_code == 304
        # Logged out: nothing.
        assert Consultant(url).get(f"/questions/{question_id}/audio").status_code in (302, 401)
    finally:
        worker.stop()
        processes.stop()


# --- the same in one process, on SQLite and PostgreSQL ------------------------------------


def test_in_process_the_worker_runtime_stores_and_the_web_app_serves_with_range(
    make_app: Callable[[Settings], Flask], settings: Settings, media: MediaServer,
    question_wav: Path, tmp_path: Path,
) -> None:
    """Two runtimes with separate data folders on one database (database_url: both kinds).

    The web app takes the call; its download job runs inline (Huey's immediate mode) in the
    worker's runtime, bound as a worker process binds its own; the web app serves the audio.
    """
    web_settings = settings.override(data_dir=tmp_path / "web-machine", audio_store="database")
    worker_settings = settings.override(data_dir=tmp_path / "worker-machine",
                                        audio_store="database")
    app = make_app(web_settings)
    worker_runtime = build_runtime(worker_settings)
    jobs.bind(worker_runtime)
    try:
        phone = PhoneSimulator(FlaskTransport(app), BASE_URL, account_sid=ACCOUNT_SID,
                               auth_token=AUTH_TOKEN, caller=CALLER, media=media,
                               flow=runtime(app).flow)
        log = phone.call(["2", "0", Speak(question_wav), "hangup"])
        assert all(status in (200, 204) for _, status in log.statuses), log.statuses
    finally:
        jobs.bind(runtime(app))
        worker_runtime.dispose()
    with unit_of_work(runtime(app).sessions) as session:
        recording = session.scalars(select(Recording)).one()
        assert recording.download_state == "stored" and recording.file_path
        question_id, key = recording.question_id, recording.file_path
        blob = runtime(app).audio.read(key, session=session)
    assert blob == question_wav.read_bytes()
    assert audio_files(tmp_path / "web-machine") == []
    assert audio_files(tmp_path / "worker-machine") == []

    add_user(app, EMAIL)
    browser = Browser(app)
    browser.login(EMAIL)
    whole = browser.get(f"/questions/{question_id}/audio")
    assert whole.status_code == 200 and whole.data == blob
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = browser.get(f"/questions/{question_id}/audio", headers={"Range": "bytes=44-143"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 44-143/{len(blob)}"
    assert part.data == blob[44:144]

    # Retention on the web "machine" deletes the blob with the row (one transaction).
    with unit_of_work(runtime(app).sessions) as session:
        question = session.get(Question, question_id)
        assert question is not None
        question.status, question.closed_at = "closed", utcnow() - timedelta(days=400)
    done = run_retention(runtime(app))
    assert done.outcome is not None and done.outcome.files_removed == 1
    with unit_of_work(runtime(app).sessions) as session:
        assert session.scalars(select(AudioBlob)).all() == []
        recording = session.scalars(select(Recording)).one()
        assert recording.file_path is None and recording.download_state == RECORDING_DELETED
    assert browser.get(f"/questions/{question_id}/audio").status_code == 404
