"""Faults, and the invariant after each: every question Twilio reported is stored exactly once.

"Reported" means: the RecordingSids the tests sent in recording callbacks (the <Record> action
and the recording status callback), as Twilio would. After each fault, and once it is gone, the
database holds exactly one recording row and one question per reported RecordingSid, nothing
else; each recording is `stored`, its file holds exactly the bytes the media host served, and
the audio folder holds nothing but those files (no partial download left behind).

The production set-up (gunicorn, `hotline worker`, PostgreSQL, Redis) runs as real processes on
a private PostgreSQL and a private Redis (tests/faults/conftest.py), which these tests stop and
restart; the shared servers on 5432 and 6379 are never touched. The disk and media-host faults
run in-process on SQLite with jobs inline, like tests/integration/test_recordings.py, whose
404/503-then-200, always-404, 401 and not-a-WAV cases are not repeated here.

During the PostgreSQL outage Twilio's retries are played by TwilioRetries: a webhook that
gets a 5xx or no answer is sent again, for at most 15 s. A <Record> action that fails gets the
spoken apology (a 200, not retried); the recording status callback answers 503 (the fix this
test came with), so it is sent again and stores the question once the database is back. Real
Twilio sends a callback again after a 5xx only when the URL's connection overrides ask for it;
where it does not, the worker's catch-up from Twilio's list of recordings stores the question
(tests/integration/test_recording_catchup.py).

The sweep runs every minute in a worker; to keep the tests short they run the same function
(`hotline.jobs.sweep`) in a separate process, or start a worker, whose start-up sweep runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask
from sqlalchemy import func, select

import hotline.recordings
from hotline.config import Settings
from hotline.jobs import sweep
from hotline.simulator import HttpTransport, PhoneSimulator, Speak, new_sid
from storage.db import make_engine, make_session_factory, unit_of_work
from storage.models import Question, Recording, Transcript
from tests.faults.conftest import PrivatePostgres, PrivateRedis, TrickleMediaServer
from tests.integration.test_worker import KOREAN_MODEL, Processes, wait_for
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER,
    Twilio,
    call_form,
    make_wav,
    runtime,
    twiml,
)

BIN = Path(sys.executable).parent
STALE_SECONDS = 3
TO_LAWYER = ["2", "0"]  # Russian, then "ask a lawyer" in the main menu


# -- the invariant ---------------------------------------------------------------------------

def invariant_problems(database_url: str, audio_dir: Path, reported: dict[str, Path], *,
                       transcribed: bool = False) -> list[str]:
    """What breaks 'every reported question stored exactly once, with its audio' (empty: none)."""
    problems: list[str] = []
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            recordings = session.scalars(select(Recording)).all()
            questions = session.scalar(select(func.count()).select_from(Question)) or 0
            transcripts = Counter(session.scalars(select(Transcript.question_id)))
            rows = [(r.recording_sid, r.download_state, r.file_path, r.question_id,
                     r.question.transcription_state) for r in recordings]
    finally:
        engine.dispose()
    per_sid = Counter(sid for sid, *_ in rows)
    if missing := set(reported) - set(per_sid):
        problems.append(f"{len(missing)} reported recordings not in the database")
    if unknown := set(per_sid) - set(reported):
        problems.append(f"{len(unknown)} recordings nobody reported")
    if twice := [sid for sid, n in per_sid.items() if n > 1]:
        problems.append(f"recordings stored more than once: {twice}")
    if questions != len(rows):
        problems.append(f"{questions} questions for {len(rows)} recordings")
    if doubled := [q for q, n in transcripts.items() if n > 1]:
        problems.append(f"questions with more than one transcript: {doubled}")
    expected_files = set()
    for sid, state, file_path, question_id, transcription in rows:
        if state != "stored" or not file_path:
            problems.append(f"{sid} is {state}")
            continue
        path = audio_dir / file_path
        expected_files.add(path)
        if not path.is_file() or path.read_bytes() != reported[sid].read_bytes():
            problems.append(f"{sid}: the stored audio is not what the media host served")
        if transcribed and (transcription != "done" or transcripts[question_id] != 1):
            problems.append(f"{sid}: transcription {transcription}, "
                            f"{transcripts[question_id]} transcripts")
    on_disk = {p for p in audio_dir.rglob("*") if p.is_file()} if audio_dir.exists() else set()
    if stray := sorted(str(p.relative_to(audio_dir)) for p in on_disk - expected_files):
        problems.append(f"stray files in the audio folder: {stray}")
    return problems


def assert_invariant(database_url: str, audio_dir: Path, reported: dict[str, Path], *,
                     transcribed: bool = False) -> None:
    assert reported, "the test reported no recording at all"
    problems = invariant_problems(database_url, audio_dir, reported, transcribed=transcribed)
    assert not problems, problems


def wait_for_invariant(processes: Processes, env: dict[str, str], reported: dict[str, Path], *,
                       seconds: float, transcribed: bool = False, sweep_every: float = 0) -> None:
    """Wait until the invariant holds; with sweep_every, run the sweep that often meanwhile."""
    audio_dir = Path(env["HOTLINE_DATA_DIR"]) / "audio"
    last_sweep = time.monotonic()

    def holds() -> bool:
        nonlocal last_sweep
        if sweep_every and time.monotonic() - last_sweep > sweep_every:
            run_sweep(env)
            last_sweep = time.monotonic()
        return not invariant_problems(env["DATABASE_URL"], audio_dir, reported,
                                      transcribed=transcribed)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if holds():
            break
        time.sleep(0.5)
    problems = invariant_problems(env["DATABASE_URL"], audio_dir, reported,
                                  transcribed=transcribed)
    assert not problems, f"{problems}\n{processes.logs()}"


# -- processes on the private PostgreSQL and Redis --------------------------------------------

def hotline_env(folder: Path, media: TrickleMediaServer, database_url: str,
                redis_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(folder / "instance"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_MEDIA_HOSTS": media.host,
        "VOSK_MODEL_RU": str(KOREAN_MODEL),
        "HOTLINE_STALE_SECONDS": str(STALE_SECONDS),
        "HOTLINE_DOWNLOAD_BACKOFF": "0.2",
        "HOTLINE_QUEUE_NAME": f"faults{new_sid('')[:8]}",
        "HOTLINE_AUDIO_STORE": "folder",
        "HOTLINE_DEMO": "",
        "HOTLINE_RECORDING_CATCHUP_HOURS": "0",  # no Twilio REST API to list recordings
        "HOTLINE_RECEIPT_SMS": "0",  # nor to send the receipts through
        "PUBLIC_BASE_URL": "",
    }
    subprocess.run([BIN / "hotline", "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def run_sweep(env: dict[str, str]) -> str:
    """Run the minutely sweep once, in a process of its own (as the worker's periodic job does)."""
    code = "from hotline.jobs import current_runtime, sweep; print(sweep(current_runtime()))"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


@pytest.fixture
def production(tmp_path: Path, media: TrickleMediaServer, pg_database: str,
               private_redis: PrivateRedis) -> Iterator[tuple[Processes, dict[str, str]]]:
    """gunicorn and workers (started by the test) on the private PostgreSQL and Redis."""
    private_redis.start()
    private_redis.client().flushall()
    env = hotline_env(tmp_path, media, pg_database, private_redis.url)
    env["TMPDIR"] = str(tmp_path / "scratch")  # where downloads are fetched before storing
    Path(env["TMPDIR"]).mkdir()
    processes = Processes(tmp_path, env)
    try:
        yield processes, env
    finally:
        processes.stop()
        private_redis.start()


class TwilioRetries(HttpTransport):
    """Twilio's side of webhooks: a request that gets no answer or a 5xx is sent again, the
    same form with the same CallSid and RecordingSid, until the hotline answers or 15 s have
    passed (the longest total time Twilio's connection overrides allow)."""

    def __init__(self, pause: float = 0.3, give_up_after: float = 15) -> None:
        self.pause, self.give_up_after = pause, give_up_after
        self.failed: list[tuple[str, int]] = []  # every attempt that failed
        self.gave_up: list[tuple[str, int]] = []  # requests that never got an answer
        self._lock = threading.Lock()

    def post(self, url: str, data: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                status, body = super().post(url, data, headers)
            except requests.RequestException:
                status, body = 0, ""
            if 0 < status < 500:
                return status, body
            if time.monotonic() > deadline:
                with self._lock:
                    self.gave_up.append((urlsplit(url).path, status))
                return status, body
            with self._lock:
                self.failed.append((urlsplit(url).path, status))
            time.sleep(self.pause)


class Phones:
    """A new caller for every call (a returning caller skips the language menu)."""

    def __init__(self, url: str, media: TrickleMediaServer, transport: HttpTransport) -> None:
        self.url, self.media, self.transport = url, media, transport

    def call(self, audio: Path) -> list[str]:
        """One call that records a question; return the RecordingSids Twilio reported."""
        caller = "+7701" + str(uuid.uuid4().int)[:7]
        phone = PhoneSimulator(self.transport, self.url, account_sid=ACCOUNT_SID,
                               auth_token=AUTH_TOKEN, caller=caller, media=self.media)
        return phone.call([*TO_LAWYER, Speak(audio), "hangup"]).recordings

    def post(self, url: str, data: dict[str, str], call_sid: str) -> None:
        PhoneSimulator(self.transport, self.url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                       caller=CALLER, media=self.media).post(url, data, call_sid)


def report_recording(phone: Phones, url: str, media: TrickleMediaServer,
                     audio: Path) -> str:
    """Twilio reporting one recording: the <Record> action, then the status callback."""
    sid, call_sid = new_sid("RE"), new_sid("CA")
    fields = {"RecordingSid": sid, "RecordingUrl": media.add(sid, audio),
              "RecordingDuration": "5"}
    phone.post(f"{url}/voice/recorded?lang=ru", {**fields, "Digits": "#"}, call_sid)
    phone.post(f"{url}/voice/recording-status?lang=ru",
               {**fields, "RecordingStatus": "completed", "RecordingSource": "RecordVerb"},
               call_sid)
    return sid


@pytest.fixture(scope="module")
def long_question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 25 s of Korean speech: its transcription keeps a worker thread busy a while."""
    folder = tmp_path_factory.mktemp("long")
    return make_wav(folder / "long.wav", " ".join(["안녕하세요 감사합니다 대한민국"] * 9),
                    voice="ko")


# -- 1. PostgreSQL restarted during calls ----------------------------------------------------

def test_postgres_restarted_during_calls_loses_and_doubles_nothing(
    production: tuple[Processes, dict[str, str]], private_postgres: PrivatePostgres,
    media: TrickleMediaServer, question_wav: Path,
) -> None:
    processes, env = production
    url = processes.web()
    processes.start("worker", "hotline", "worker", "--workers", "2")
    twilio = TwilioRetries()
    phones = Phones(url, media, twilio)
    reported: dict[str, Path] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def caller(calls: int) -> None:
        try:
            for _ in range(calls):
                sids = phones.call(question_wav)
                with lock:
                    reported.update(dict.fromkeys(sids, question_wav))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def during_outage() -> None:
        try:
            sid = report_recording(phones, url, media, question_wav)
            with lock:
                reported[sid] = question_wav
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    callers = [threading.Thread(target=caller, args=(4,)) for _ in range(6)]
    for thread in callers:
        thread.start()
    time.sleep(1.0)
    private_postgres.restart()  # pg_ctl restart -m fast, in the middle of the calls
    time.sleep(1.0)
    private_postgres.stop()  # and a longer outage, with recordings reported meanwhile
    reporters = [threading.Thread(target=during_outage) for _ in range(4)]
    for thread in reporters:
        thread.start()
    time.sleep(4)
    private_postgres.start()
    for thread in callers + reporters:
        thread.join(timeout=120)
    assert not errors, errors
    # The status callbacks that came while the database was down were answered 503 and sent
    # again (the <Record> actions got the spoken apology, a 200, and were not).
    assert ("/voice/recording-status", 503) in twilio.failed, twilio.failed
    assert twilio.gave_up == []  # within Twilio's 15 s every webhook got its answer
    assert len(reported) >= 16  # the 4 reported in the outage, and most of the 24 calls
    wait_for_invariant(processes, env, reported, seconds=90, sweep_every=STALE_SECONDS + 1)
    time.sleep(1)
    assert_invariant(env["DATABASE_URL"], Path(env["HOTLINE_DATA_DIR"]) / "audio", reported)


# -- 2. Redis restarted, its queue lost ------------------------------------------------------

def test_redis_lost_its_queue_and_the_sweep_recovers_every_job(
    production: tuple[Processes, dict[str, str]], private_redis: PrivateRedis,
    media: TrickleMediaServer, question_wav: Path, long_question: Path,
) -> None:
    processes, env = production
    url = processes.web()
    phones = Phones(url, media, HttpTransport())
    reported: dict[str, Path] = {}

    def call(audio: Path) -> None:
        sids = phones.call(audio)
        assert len(sids) == 1
        reported.update(dict.fromkeys(sids, audio))

    # Downloads lost: recordings reported while no worker runs, then Redis dies and comes back
    # empty; two more calls come in while Redis is down (enqueueing fails, the callers still
    # hear the promise).
    for _ in range(3):
        call(question_wav)
    assert private_redis.client().dbsize() > 0  # the download jobs are waiting in Redis
    private_redis.stop()
    for _ in range(2):
        call(question_wav)
    private_redis.start()
    assert private_redis.client().dbsize() == 0  # nothing survived
    time.sleep(STALE_SECONDS + 1)
    worker = processes.worker()  # one thread; its start-up sweep recovers
    wait_for_invariant(processes, env, reported, seconds=120, transcribed=True)

    # Transcriptions lost: a long question and two short ones are reported while no worker
    # runs; a worker downloads them first (the queue is first in, first out), which queues
    # their transcriptions, and starts on the long one; Redis then loses the other two.
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)
    call(long_question)
    call(question_wav)
    call(question_wav)
    processes.worker()
    database = env["DATABASE_URL"]
    seen: list[object] = []

    def first_running() -> bool:
        seen[:] = [stored_count(database), transcription_states(database)]
        return seen == [len(reported), Counter(done=5, running=1, pending=2)]

    deadline = time.monotonic() + 90
    while not first_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_running(), f"{seen}\n{processes.logs()}"
    minute = time.gmtime().tm_min
    private_redis.restart()
    wait_for(lambda: transcription_states(database).get("running", 0) == 0, 120,
             "the long transcription to end", processes)
    time.sleep(2)
    if time.gmtime().tm_min == minute:  # the worker's own minutely sweep has not run
        assert transcription_states(database) == Counter(done=6, pending=2)  # jobs gone
    run_sweep(env)  # what the worker's minutely sweep does
    wait_for_invariant(processes, env, reported, seconds=120, transcribed=True)


def transcription_states(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return Counter(session.scalars(select(Question.transcription_state)))
    finally:
        engine.dispose()


def stored_count(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return session.scalar(select(func.count()).select_from(Recording)
                                  .where(Recording.download_state == "stored")) or 0
    finally:
        engine.dispose()


# -- 5. a worker killed with SIGKILL mid-download ---------------------------------------------

def test_a_worker_killed_mid_download_leaves_no_partial_file_and_stores_once(
    production: tuple[Processes, dict[str, str]], media: TrickleMediaServer, question_wav: Path,
) -> None:
    processes, env = production
    url = processes.web()
    first = processes.worker()
    # The recording's body comes 2 KB every 0.2 s (a few seconds in all, within the timeout).
    media.slow_next(1, piece=2048, pause=0.2)
    reported = dict.fromkeys(Phones(url, media, HttpTransport()).call(question_wav), question_wav)
    assert len(reported) == 1
    assert media.trickling.wait(30), processes.logs()
    time.sleep(1.0)  # well inside the body
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert stored_count(env["DATABASE_URL"]) == 0  # killed before it could finish
    time.sleep(STALE_SECONDS + 1)
    scratch = Path(env["TMPDIR"])
    left = [p for p in scratch.rglob("*") if p.is_file()]
    assert [p.suffix for p in left] == [".part"], left  # it was killed in the middle of the body
    processes.worker()  # its start-up sweep finds the download nobody is doing
    wait_for_invariant(processes, env, reported, seconds=90, transcribed=True)
    # The killed worker's half-fetched copy stays in its scratch folder (outside the audio
    # folder, never taken for a recording); nothing else is left behind.
    assert [p for p in scratch.rglob("*") if p.is_file()] == left


# -- in-process: the disk and the media host --------------------------------------------------

@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The in-process tests run on SQLite (the faults here are the disk's and the host's)."""
    return f"sqlite:///{tmp_path / 'hotline.sqlite3'}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings; the sweep takes anything untouched for a second."""
    return replace(settings, stale_seconds=1)


def reported_by_call(phone: PhoneSimulator, audio: Path) -> dict[str, Path]:
    log = phone.call([*TO_LAWYER, Speak(audio)])
    return dict.fromkeys(log.recordings, audio)


def sweep_when_stale(app: Flask) -> tuple[int, int]:
    time.sleep(1.1)
    return sweep(runtime(app))


@contextmanager
def full_disk(folder: Path) -> Iterator[Callable[[], None]]:
    """Make folder refuse writes; yield a function that makes it accept them again.

    A 256 KB tmpfs mounted on folder and filled up, so writes fail with ENOSPC like a full
    disk (needs root with CAP_SYS_ADMIN, which the test machine has); failing that, the folder
    made immutable with `chattr +i` (EPERM, even for root). Skips when neither is possible.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs",
                              str(folder)], capture_output=True, check=False).returncode == 0
    filler = folder / "filler"
    if mounted:
        try:
            with filler.open("wb") as out:
                out.write(b"\0" * 512 * 1024)
        except OSError:
            pass  # the disk is full: that is what we want
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                        check=False).returncode != 0:
        pytest.skip("cannot make a folder refuse writes here (no tmpfs mount, no chattr +i)")

    recovered = False

    def recover() -> None:
        nonlocal recovered
        if recovered:
            return
        recovered = True
        if mounted:
            filler.unlink()
        else:
            subprocess.run(["chattr", "-i", str(folder)], check=True)

    try:
        yield recover
    finally:
        recover()
        if mounted:
            # Keep what was stored on the small disk: copy it out, unmount, copy it back.
            saved = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
                     if p.is_file()}
            subprocess.run(["umount", str(folder)], check=True)
            for relative, data in saved.items():
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(data)


# -- 3. the disk refusing the audio write ----------------------------------------------------

def test_a_full_disk_keeps_the_question_and_the_retry_stores_it_once(
    app: Flask, phone: PhoneSimulator, media: TrickleMediaServer, question_wav: Path,
    settings: Settings,
) -> None:
    audio_dir = runtime(app).settings.audio_dir
    with full_disk(audio_dir) as recover:
        reported = reported_by_call(phone, question_wav)
        with unit_of_work(runtime(app).sessions) as session:
            [recording] = session.scalars(select(Recording)).all()
            assert recording.download_state == "failed"
            assert recording.source_url and recording.question.status == "waiting"
            error = recording.last_error or ""
        assert "No space left" in error or "not permitted" in error, error
        assert sweep_when_stale(app) == (1, 0)  # retried while the disk is still full
        problems = invariant_problems(settings.database_url, audio_dir, reported)
        assert any("is failed" in p for p in problems), problems
        recover()
        assert sweep_when_stale(app) == (1, 0)  # the next sweep after the disk recovered
        assert_invariant(settings.database_url, audio_dir, reported)
    assert_invariant(settings.database_url, audio_dir, reported)
    assert sweep_when_stale(app) == (0, 0)  # nothing left to do


# -- 4. the media host answering 500, and a slow body ----------------------------------------

def test_a_media_host_answering_500_is_retried(
    app: Flask, phone: PhoneSimulator, media: TrickleMediaServer, question_wav: Path,
    settings: Settings,
) -> None:
    media.fail_next(500, 500)
    reported = reported_by_call(phone, question_wav)
    assert [status for _, status in media.requests] == [500, 500, 200]
    assert_invariant(settings.database_url, settings.audio_dir, reported)


def test_a_body_slower_than_the_timeout_is_retried_and_never_stored_half(
    app: Flask, twilio: Twilio, media: TrickleMediaServer, question_wav: Path,
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(hotline.recordings, "READ_TIMEOUT", 0.3)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the download is fetched
    # Every attempt of the first job stalls after 4 KB (download_attempts=4).
    media.slow_next(settings.download_attempts, piece=4096, pause=1.0)
    sid = new_sid("RE")
    form = call_form(RecordingSid=sid, RecordingUrl=media.add(sid, question_wav),
                     RecordingDuration="5", RecordingStatus="completed")
    assert twilio.post("/voice/recording-status?lang=ru", form).status_code == 204
    reported = {sid: question_wav}
    problems = invariant_problems(settings.database_url, settings.audio_dir, reported)
    assert problems == [f"{sid} is failed"]  # kept with its URL, and no partial file anywhere
    assert media.hits(sid) == settings.download_attempts
    assert sweep_when_stale(app) == (1, 0)  # the sweep's retry gets a prompt host
    assert_invariant(settings.database_url, settings.audio_dir, reported)
    assert list(scratch.iterdir()) == []  # no half-fetched copy left anywhere
    # The same recording reported again by Twilio changes nothing.
    twiml(twilio.post("/voice/recorded?lang=ru", {**form, "Digits": "#"}))
    assert media.hits(sid) == settings.download_attempts + 1
    assert_invariant(settings.database_url, settings.audio_dir, reported)
