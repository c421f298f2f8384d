"""Webhook throughput: the hotline against a bare Flask app answering a constant TwiML document.

    .venv/bin/python bench/webhook_throughput.py                       # SQLite, 3 rounds of 10 s
    .venv/bin/python bench/webhook_throughput.py --backend postgres --rounds 5
    .venv/bin/python bench/webhook_throughput.py --quick               # 1 round of 4 s

Both apps run under gunicorn with the same settings (workers, threads, worker class), at the
same time, in the same run. A fixed number of concurrent clients posts for a fixed time to:

- `/voice/incoming`: a signed new call each time (a new CallSid and a new caller's number: the
  hotline creates the call and the caller rows and answers the language menu);
- one menu step: a signed POST to the menu action URL that the incoming TwiML gives (the
  language menu, key 2), for calls created by the incoming rounds (the hotline appends the key
  to the call, remembers the caller's language and answers the main menu).

The bare app answers the same two documents, byte for byte as the hotline answered them, from
memory. Rounds are interleaved (bare and hotline alternate which goes first), so a busy moment
of the shared machine falls on both alike. Printed: requests per second of each round, the
median per side, and the ratio hotline / bare (target >= 0.5). Nothing is asserted.

The clients are a minimal asyncio HTTP/1.1 client (one request per connection, as gunicorn's
sync workers close every connection): an httpx client costs several times more CPU per request
on the same two cores as the servers, which would cap the bare app's figure and flatter the
ratio. The client's CPU use is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

BIN = Path(sys.executable).parent
ACCOUNT_SID = "AC" + "d" * 32
AUTH_TOKEN = "bench-throughput-token-0123456789"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET = 0.5

BARE_APP = '''
"""A bare Flask app: answers the constant TwiML documents saved next to it."""
from pathlib import Path

from flask import Flask, Response

HERE = Path(__file__).parent
INCOMING = (HERE / "incoming.xml").read_bytes()
MENU = (HERE / "menu.xml").read_bytes()
app = Flask(__name__)


@app.post("/voice/incoming")
def incoming():
    return Response(INCOMING, mimetype="application/xml")


@app.post("/voice/menu")
def menu():
    return Response(MENU, mimetype="application/xml")
'''


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


# -- servers ----------------------------------------------------------------------------------

class Servers:
    """The gunicorn processes this benchmark starts (own process groups); stops exactly those."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[subprocess.Popen[bytes]] = []

    def gunicorn(self, name: str, app: str, env: dict[str, str], workers: int, threads: int,
                 extra: Sequence[str] = ()) -> tuple[str, int]:
        port = free_port()
        with (self.folder / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                 "--threads", str(threads), *extra, app],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{(self.folder / f'{name}.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return "127.0.0.1", port
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not start within 60 s")

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


@contextmanager
def database(kind: str, data: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{data / 'hotline.sqlite3'}"
        return
    import psycopg

    name = f"hotline_rps_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the client -------------------------------------------------------------------------------

@dataclass
class Target:
    host: str
    port: int

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


async def post(host: str, port: int, path: str, form: dict[str, str],
               signature: str) -> tuple[int, bytes]:
    """One HTTP/1.1 POST on its own connection; return (status, body)."""
    body = urlencode(form).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n"
            "Connection: close\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, rest.partition(b"\r\n\r\n")[2]


class Twilio:
    """Builds signed webhook requests, the way Twilio signs them."""

    def __init__(self) -> None:
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(AUTH_TOKEN)
        self.numbers = iter(range(10**6, 10**7))

    def form(self, call_sid: str, number: str, **extra: str) -> dict[str, str]:
        return {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "From": number,
                "To": "+77000000000", "ApiVersion": "2010-04-01", "Direction": "inbound",
                "CallStatus": "in-progress", **extra}

    def sign(self, url: str, form: dict[str, str]) -> str:
        return str(self.validator.compute_signature(url, form))

    def new_number(self) -> str:
        return f"+7707{next(self.numbers):07d}"


Request = Callable[[Target], tuple[str, dict[str, str], str]]


@dataclass
class Round:
    side: str
    step: str
    requests: int
    seconds: float
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def hammer(target: Target, make: Request, clients: int, seconds: float,
                 side: str, step: str) -> Round:
    result = Round(side, step, 0, seconds)
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop_at:
            path, form, signature = make(target)
            try:
                status, _ = await post(target.host, target.port, path, form, signature)
            except OSError:
                result.errors += 1
                continue
            result.statuses[status] += 1
            if status == 200:
                result.requests += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.monotonic() - started
    return result


# -- the run ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="the hotline's database (default: the SQLite default)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side and step")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (both apps)")
    parser.add_argument("--web-threads", type=int, default=1,
                        help="gunicorn threads per worker (both apps)")
    parser.add_argument("--quick", action="store_true", help="one round of 4 s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 1, 4.0

    work = Path(tempfile.mkdtemp(prefix="hotline-rps-"))
    servers = Servers(work)
    say(f"Webhook throughput, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; machine "
        f"{platform.node()}, {os.cpu_count()} CPUs, load average {load_average()}")
    say(f"gunicorn --workers {args.web_workers} --threads {args.web_threads} for both apps; "
        f"{args.clients} concurrent clients; {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s per side and step; hotline on {args.backend}")
    say()
    try:
        with database(args.backend, work / "instance") as url:
            rounds = run(args, work, servers, url)
    finally:
        servers.stop()
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(rounds)
    say(f"load average at the end {load_average()}")
    return 0


def run(args: argparse.Namespace, work: Path, servers: Servers, database_url: str) -> list[Round]:
    env = {
        **os.environ,
        "HOTLINE_DATA_DIR": str(work / "instance"),
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "HOTLINE_QUEUE_NAME": f"hotlinerps{uuid.uuid4().hex[:8]}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": "+77000000000",
        "HOTLINE_DEMO": "",
        "PUBLIC_BASE_URL": "",
    }
    subprocess.run([str(BIN / "hotline"), "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    # As deployed: the Kazakh prompts rendered (otherwise every call logs fall-back warnings).
    subprocess.run([str(BIN / "hotline"), "prompts", "render"], env=env, check=True,
                   capture_output=True)
    hotline = Target(*servers.gunicorn("hotline", "hotline.app:create_app()", env,
                                       args.web_workers, args.web_threads))
    twilio = Twilio()

    # The documents the hotline answers: the language menu, and (after key 2) the main menu.
    async def sample() -> tuple[bytes, str, bytes]:
        sid = "CA" + uuid.uuid4().hex
        form = twilio.form(sid, twilio.new_number())
        url = f"{hotline.base}/voice/incoming"
        status, incoming = await post(hotline.host, hotline.port, "/voice/incoming", form,
                                      twilio.sign(url, form))
        if status != 200:
            raise RuntimeError(f"the hotline answered {status} to /voice/incoming")
        gather = ET.fromstring(incoming).find("Gather")
        action = gather.get("action", "") if gather is not None else ""
        parts = urlsplit(action)
        menu_path = f"{parts.path}?{parts.query}"
        form = twilio.form(sid, form["From"], Digits="2")
        status, menu = await post(hotline.host, hotline.port, menu_path, form,
                                  twilio.sign(action, form))
        if status != 200:
            raise RuntimeError(f"the hotline answered {status} to {action}")
        return incoming, menu_path, menu

    incoming_doc, menu_path, menu_doc = asyncio.run(sample())
    bare_dir = work / "bare"
    bare_dir.mkdir()
    (bare_dir / "bare_app.py").write_text(BARE_APP)
    (bare_dir / "incoming.xml").write_bytes(incoming_doc)
    (bare_dir / "menu.xml").write_bytes(menu_doc)
    bare = Target(*servers.gunicorn("bare", "bare_app:app", dict(os.environ),
                                    args.web_workers, args.web_threads,
                                    ["--chdir", str(bare_dir)]))
    say(f"documents: incoming {len(incoming_doc)} bytes, menu step {len(menu_doc)} bytes "
        f"(menu action {menu_path})")

    calls: list[tuple[str, str]] = []  # calls the hotline created, for the menu steps
    next_call = iter(range(10**9))

    def incoming(target: Target) -> tuple[str, dict[str, str], str]:
        sid, number = "CA" + uuid.uuid4().hex, twilio.new_number()
        form = twilio.form(sid, number)
        if target is hotline:
            calls.append((sid, number))
        return "/voice/incoming", form, twilio.sign(f"{target.base}/voice/incoming", form)

    def menu(target: Target) -> tuple[str, dict[str, str], str]:
        sid, number = calls[next(next_call) % len(calls)]
        form = twilio.form(sid, number, Digits="2")
        return menu_path, form, twilio.sign(f"{target.base}{menu_path}", form)

    note("warming up both apps")
    for target in (hotline, bare):
        asyncio.run(hammer(target, incoming, args.clients, 2.0, "warm-up", "incoming"))
    results: list[Round] = []
    cpu_before = time.process_time()
    wall_before = time.monotonic()
    for round_ in range(args.rounds):
        for step, make in (("incoming", incoming), ("menu step", menu)):
            sides = [("hotline", hotline), ("bare", bare)]
            if (round_ + (step == "menu step")) % 2:
                sides.reverse()
            for side, target in sides:
                note(f"round {round_ + 1}: {step}, {side}")
                results.append(asyncio.run(hammer(target, make, args.clients, args.seconds,
                                                  side, step)))
    client_cpu = (time.process_time() - cpu_before) / (time.monotonic() - wall_before)
    say(f"the client used {client_cpu:.2f} cores on average while measuring")
    say()
    return results


def report(rounds: list[Round]) -> None:
    say(f"{'step':<11}{'side':<9}{'rps per round':<34}{'median':>8}  non-200 / errors")
    medians: dict[tuple[str, str], float] = {}
    for step in ("incoming", "menu step"):
        for side in ("hotline", "bare"):
            mine = [r for r in rounds if r.step == step and r.side == side]
            if not mine:
                continue
            median = statistics.median(r.rps for r in mine)
            medians[(step, side)] = median
            bad = Counter[int]()
            for r in mine:
                bad.update({k: v for k, v in r.statuses.items() if k != 200})
            errors = sum(r.errors for r in mine)
            say(f"{step:<11}{side:<9}{' '.join(f'{r.rps:7.1f}' for r in mine):<34}"
                f"{median:>8.1f}  {dict(bad) or 0} / {errors}")
    say()
    for step in ("incoming", "menu step"):
        if (step, "hotline") in medians and (step, "bare") in medians:
            ratio = medians[(step, "hotline")] / medians[(step, "bare")]
            per_round = [h.rps / b.rps for h, b in zip(
                [r for r in rounds if r.step == step and r.side == "hotline"],
                [r for r in rounds if r.step == step and r.side == "bare"], strict=True)]
            say(f"{step}: hotline / bare = {ratio:.2f} (target >= {TARGET}) -> "
                f"{'met' if ratio >= TARGET else 'MISSED'}; per round "
                + " ".join(f"{x:.2f}" for x in per_round))


if __name__ == "__main__":
    sys.exit(main())
