"""Queue page benchmark: the time of GET /queue with 1,000 and with 100,000 questions in the
database, on SQLite and on PostgreSQL; and of the public figures, GET /public/stats.json,
computed on every request and kept by the app for a minute (hotline.public_stats).

    .venv/bin/python bench/queue_page.py                 # both backends, 1k and 100k (~1-2 min)
    .venv/bin/python bench/queue_page.py --explain       # also print the main queries' plans
    .venv/bin/python bench/queue_page.py --backends sqlite --sizes 1000,10000,100000

For each backend and size: a fresh database (a temporary SQLite file; a temporary PostgreSQL
database on 127.0.0.1:5432, created and dropped), migrated with Alembic, seeded by bulk insert
with a realistic mix (most questions closed, an open backlog across languages, topics,
channels and regions, with callers, claims, retries, urgent and repeat callers), then a
consultant logs in through Flask's test client and each page is fetched: a warm-up, then the
median of several runs. Every figure is a ratio to the 1k run of the same backend in the same
process (the machine is shared and noisy); milliseconds are printed for context.
See bench/README.md ("Queue page").
"""

from __future__ import annotations

import argparse
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.app import create_app  # noqa: E402
from hotline.config import Settings  # noqa: E402
from storage.db import make_engine, unit_of_work, upgrade  # noqa: E402
from storage.models import Caller, Question, Transcript  # noqa: E402
from storage.question_page import REGION_CODES  # noqa: E402
from storage.queue import QueueFilter, priority_at  # noqa: E402
from storage.users import add_user  # noqa: E402

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"
POSTGRES_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BASE_URL = "https://hotline.bench"
EMAIL = "lawyer@bench.kz"
PASSWORD = "bench password 42"
TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')

# The pages timed: the default (due, priority order), a filtered one, the closed tab, filtered.
PAGES = {
    "default": "/queue",
    "filtered": "/queue?language=ru&topic=pension",
    "closed": "/queue?status=closed",
    "closed filtered": "/queue?status=closed&language=ru&region=almaty_region",
}

LANGUAGES = [("kk", 55), ("ru", 43), (None, 2)]
TOPICS = [("pension", 35), ("social_assistance", 25), ("disability", 15), ("documents", 15),
          (None, 10)]
CHANNELS = [("voice", 80), ("sms", 20)]
REGIONS = REGION_CODES  # the codes the question page tags questions with
CLOSE_REASONS = [("resolved", 70), ("no_answer", 10), ("wrong_number", 5), ("silence", 8),
                 ("test_call", 4), ("abusive", 3)]


def note(line: str) -> None:
    """Progress on stderr, so the report on stdout stays clean."""
    print(f"  .. {line}", file=sys.stderr, flush=True)


def pick(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


MAX_OPEN = 2_000


def open_count(size: int) -> int:
    """The open backlog: 10% of the questions, at most MAX_OPEN (--max-open).

    The backlog is bounded by the volunteers' work, not by the history: at 100k questions the
    table holds years of closed ones and a few weeks of open ones.
    """
    return min(size // 10, MAX_OPEN)


# -- seeding -----------------------------------------------------------------------------------

# A transcript of a typical question's length (about 12 seconds of speech).
HEARD = ("сәлеметсіз бе менің анам зейнеткер ол былтыр зейнетақы алды биыл төлем тоқтап қалды "
         "халыққа қызмет көрсету орталығына бардық олар құжат жетіспейді деді не істеуіміз керек")


def seed(engine: Engine, size: int, now: datetime, rng: random.Random) -> dict[str, int]:
    """Insert consultants, callers and `size` questions (bulk INSERTs); return what was made."""
    with unit_of_work(_sessions(engine)) as session:
        consultant = add_user(session, EMAIL, "Bench Lawyer", "consultant", PASSWORD)
        others = [add_user(session, f"lawyer{n}@bench.kz", f"Lawyer {n}", "consultant",
                           PASSWORD) for n in range(4)]
        user_ids = [consultant.id, *(u.id for u in others)]
    callers = max(1, size // 3)  # residents ask about three questions each over the years
    with engine.begin() as connection:
        connection.execute(insert(Caller), [
            {"id": n + 1, "phone": f"+7701{n:07d}", "language": pick(rng, LANGUAGES),
             "first_seen": now, "last_seen": now, "sms_opted_out": False,
             "sms_awaiting_question": False}
            for n in range(callers)])
    # History spans about 90 questions a day; open ones are the newest weeks.
    span = timedelta(days=max(30, size / 90))
    opened = open_count(size)
    rows: list[dict[str, Any]] = []
    stats = {"questions": size, "open": opened, "callers": callers, "claimed": 0,
             "scheduled": 0, "urgent": 0, "repeat": 0}
    for n in range(size):
        is_open = n >= size - opened
        if is_open:
            created = now - timedelta(days=21) * rng.random() ** 2
        else:
            created = now - timedelta(days=14) - span * rng.random()
        channel = pick(rng, CHANNELS)
        row: dict[str, Any] = {
            "caller_id": rng.randint(1, callers), "channel": channel,
            "language": pick(rng, LANGUAGES), "topic": pick(rng, TOPICS),
            "status": "waiting", "created_at": created,
            "text": "Менің зейнетақым туралы сұрағым бар" if channel == "sms" else None,
            "transcription_state": "done" if channel == "sms" or rng.random() < 0.9
            else rng.choice(["pending", "failed", "no_model"]),
            "transcription_attempts": 1, "urgent": False, "repeat_caller": rng.random() < 0.2,
            "callback_attempts": 0, "next_callback_at": None,
            "region": rng.choice(REGIONS) if rng.random() < 0.7 else None,
            "claimed_by_id": None, "claimed_at": None, "claim_touched_at": None,
            "closed_at": None, "close_reason": None, "closed_by_id": None,
        }
        if is_open:
            row["urgent"] = rng.random() < 0.05
            chance = rng.random()
            if chance < 0.10:
                row.update(status="claimed", claimed_by_id=rng.choice(user_ids),
                           claimed_at=now - timedelta(minutes=5), claim_touched_at=now)
            elif chance < 0.25:
                row["callback_attempts"] = rng.randint(1, 2)
                # Half wait for their retry, half are due again.
                row["next_callback_at"] = now + timedelta(hours=rng.uniform(-20, 20))
                stats["scheduled"] += row["next_callback_at"] > now
            stats["claimed"] += row["status"] == "claimed"
            stats["urgent"] += row["urgent"]
            stats["repeat"] += row["repeat_caller"]
        else:
            row.update(status="closed", closed_at=created + timedelta(days=rng.uniform(0, 6)),
                       close_reason=pick(rng, CLOSE_REASONS), closed_by_id=rng.choice(user_ids),
                       callback_attempts=rng.choice([0, 0, 0, 1, 2, 3]))
        row["priority_at"] = priority_at(created, urgent=row["urgent"],
                                         repeat_caller=row["repeat_caller"],
                                         callback_attempts=row["callback_attempts"])
        rows.append(row)
    rows.sort(key=lambda r: r["created_at"])  # ids in arrival order, as in production
    with engine.begin() as connection:
        for start in range(0, len(rows), 5_000):
            connection.execute(insert(Question), rows[start:start + 5_000])
        # What Vosk heard, for every transcribed call (the queue's rows show its start).
        heard = connection.scalars(select(Question.id).where(
            Question.channel == "voice", Question.transcription_state == "done")).all()
        transcripts = [{"question_id": question_id, "language": "kk", "model": "bench",
                        "text": HEARD, "words": [], "confidence": 0.8, "duration": 12.0,
                        "elapsed": 3.0, "created_at": now} for question_id in heard]
        for start in range(0, len(transcripts), 5_000):
            connection.execute(insert(Transcript), transcripts[start:start + 5_000])
    stats["transcripts"] = len(transcripts)
    return stats


def _sessions(engine: Engine) -> Any:
    from storage.db import make_session_factory

    return make_session_factory(engine)


def analyse(engine: Engine) -> None:
    """PostgreSQL: VACUUM ANALYZE, as autovacuum does after a bulk load (statistics, and the
    visibility map that index-only scans need). SQLite: nothing; the app never runs ANALYZE,
    so the planner works without statistics, as it does in production."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


# -- databases ---------------------------------------------------------------------------------

@contextmanager
def database(backend: str, folder: Path, size: int) -> Iterator[str]:
    """Yield the URL of a new empty database; drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'queue-{size}.sqlite3'}"
        return
    name = f"hotline_bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield POSTGRES_SERVER + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


# -- the plans of the main queries --------------------------------------------------------------

def explain(engine: Engine, now: datetime) -> None:
    """Print the query plans of the page's queries for the default and a filtered queue."""
    from sqlalchemy.orm import Session

    from storage import queue

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    from sqlalchemy import event

    for filters in (QueueFilter(), QueueFilter(language="ru", topic="pension"),
                    QueueFilter(status="closed"),
                    QueueFilter(status="closed", language="ru", region="almaty_region")):
        captured.clear()
        event.listen(engine, "before_cursor_execute", capture)
        with Session(engine) as session:
            page = queue.queue_page(session, filters, now)
            queue.queue_counts(session, filters, now)
            del page
        event.remove(engine, "before_cursor_execute", capture)
        print(f"\n  plans for {filters}")
        with engine.connect() as connection:
            for statement, parameters in captured:
                if "FROM users" in statement:
                    continue  # the holders, by primary key
                prefix = ("EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite"
                          else "EXPLAIN ")
                plan = connection.exec_driver_sql(prefix + statement, parameters).all()
                first = " ".join(statement.split())[:110]
                print(f"    {first}...")
                for line in plan:
                    print("      " + str(line[-1]))


# -- timing ------------------------------------------------------------------------------------

@dataclass
class Timing:
    backend: str
    size: int
    pages: dict[str, float]  # median seconds per page
    rows: dict[str, int]  # rows shown per page
    seed_seconds: float


class Consultant:
    """The app on one database, with a consultant logged in through the test client."""

    def __init__(self, url: str, folder: Path) -> None:
        settings = Settings(data_dir=folder / "instance", database_url=url,
                            secret_key="bench-secret-key-0123456789abcdef",
                            twilio_account_sid="AC" + "b" * 32,
                            twilio_auth_token="bench-auth-token-0123456789",
                            twilio_phone_number="+77000000000")
        self.app = create_app(settings)
        self.client = self.app.test_client()
        self.headers = {"Accept-Language": "ru"}
        login = self.client.get("/login", base_url=BASE_URL, headers=self.headers)
        token = TOKEN.search(login.get_data(as_text=True))
        assert token, "no CSRF token on /login"
        answer = self.client.post("/login", base_url=BASE_URL, headers={
            **self.headers, "Referer": f"{BASE_URL}/login"}, data={
            "csrf_token": token.group(1), "email": EMAIL, "password": PASSWORD})
        assert answer.status_code == 302, answer.get_data(as_text=True)[:500]

    def fetch(self, path: str) -> tuple[float, int]:
        """GET the page; return the seconds it took and the rows it shows."""
        started = time.perf_counter()
        response = self.client.get(path, base_url=BASE_URL, headers=self.headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (path, response.status_code)
        return elapsed, response.get_data(as_text=True).count('<tr id="question-')

    def close(self) -> None:
        self.app.extensions["hotline"].dispose()


def time_pages(consultants: dict[int, Consultant], runs: int) -> dict[int, Timing]:
    """Fetch every page from every size in turn (interleaved, so a busy moment of the machine
    falls on all sizes alike): a warm-up round, then `runs` timed rounds; keep the medians."""
    times: dict[tuple[int, str], list[float]] = {}
    shown: dict[tuple[int, str], int] = {}
    for run in range(runs + 1):
        for size, consultant in consultants.items():
            for name, path in PAGES.items():
                elapsed, rows = consultant.fetch(path)
                shown[size, name] = rows
                if run:  # the first round is the warm-up
                    times.setdefault((size, name), []).append(elapsed)
    return {size: Timing("", size, {name: statistics.median(times[size, name])
                                    for name in PAGES},
                         {name: shown[size, name] for name in PAGES}, 0.0)
            for size in consultants}


def time_public(consultants: dict[int, Consultant], runs: int) -> dict[int, tuple[float, float]]:
    """GET /public/stats.json (no login needed): computed on every request (the app's
    STATS_SECONDS at 0) and as deployed, kept by the app for a minute; interleaved as
    time_pages is; the medians (computed, kept) by size."""
    from hotline import public_stats

    kept_for = public_stats.STATS_SECONDS
    times: dict[tuple[int, str], list[float]] = {}
    try:
        for run in range(runs + 1):
            for size, consultant in consultants.items():
                for mode, seconds in (("computed", 0.0), ("kept", kept_for)):
                    public_stats.STATS_SECONDS = seconds
                    elapsed, _rows = consultant.fetch("/public/stats.json")
                    if run:
                        times.setdefault((size, mode), []).append(elapsed)
    finally:
        public_stats.STATS_SECONDS = kept_for
    return {size: (statistics.median(times[size, "computed"]),
                   statistics.median(times[size, "kept"])) for size in consultants}


def main(argv: Sequence[str] | None = None) -> int:
    global MAX_OPEN
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default: both)")
    parser.add_argument("--sizes", default="1000,100000",
                        help="question counts; the first is the baseline (default 1000,100000)")
    parser.add_argument("--runs", type=int, default=9,
                        help="timed fetches of each page after the warm-up (default 9)")
    parser.add_argument("--explain", action="store_true",
                        help="print the main queries' plans at each size")
    parser.add_argument("--seed", type=int, default=5, help="random seed of the data")
    parser.add_argument("--max-open", type=int, default=MAX_OPEN,
                        help="the open backlog's ceiling (default 2000; 10%% of the "
                             "questions below it)")
    args = parser.parse_args(argv)
    MAX_OPEN = args.max_open
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    now = datetime.now(UTC)

    print("Queue page benchmark: GET /queue, median of "
          f"{args.runs} after a warm-up; pages: " + ", ".join(f"{k} = {v}"
                                                             for k, v in PAGES.items()))
    timings: list[Timing] = []
    public: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hotline-bench-queue-") as tmp:
        folder = Path(tmp)
        for backend in backends:
            with ExitStack() as stack:
                consultants: dict[int, Consultant] = {}
                seeded: dict[int, float] = {}
                for size in sizes:
                    url = stack.enter_context(database(backend, folder, size))
                    note(f"{backend} {size}: migrating")
                    upgrade(url)
                    engine = make_engine(url)
                    try:
                        started = time.perf_counter()
                        stats = seed(engine, size, now, random.Random(args.seed))
                        analyse(engine)
                        seeded[size] = time.perf_counter() - started
                        note(f"{backend} {size}: seeded in {seeded[size]:.1f} s: {stats}")
                        if args.explain:
                            print(f"\n{backend}, {size:,} questions:")
                            explain(engine, now)
                    finally:
                        engine.dispose()
                    consultants[size] = Consultant(url, folder / f"{backend}-{size}")
                    stack.callback(consultants[size].close)
                note(f"{backend}: timing")
                for size, timing in time_pages(consultants, args.runs).items():
                    timing.backend, timing.seed_seconds = backend, seeded[size]
                    timings.append(timing)
                for size, medians in time_public(consultants, args.runs).items():
                    public[backend, size] = medians

    print()
    print(f"{'backend':<11} {'questions':>9} {'open':>6}  " + "  ".join(
        f"{name:>24}" for name in PAGES))
    for backend in backends:
        base = next(t for t in timings if t.backend == backend and t.size == sizes[0])
        for timing in (t for t in timings if t.backend == backend):
            cells = []
            for name in PAGES:
                ms = timing.pages[name] * 1000
                ratio = timing.pages[name] / base.pages[name]
                cells.append(f"{ms:7.1f} ms  x{ratio:5.2f} ({timing.rows[name]:>2})")
            print(f"{backend:<11} {timing.size:>9,} {open_count(timing.size):>6,}  "
                  + "  ".join(f"{c:>24}" for c in cells))
    print(f"\nx = page time / the same page at {sizes[0]:,} questions on the same backend, in "
          "this run; (n) = rows shown (a page holds at most 50).")
    print(f"\n{'backend':<11} {'questions':>9}  {'/public/stats.json computed':>30}  "
          f"{'kept by the app':>16}  {'computed / kept':>15}")
    for backend in backends:
        base = public[backend, sizes[0]][0]
        for size in sizes:
            computed, kept = public[backend, size]
            print(f"{backend:<11} {size:>9,}  {computed * 1000:12.1f} ms  x{computed / base:6.2f}"
                  f"{'':>6}  {kept * 1000:13.1f} ms  {computed / kept:15.1f}")
    print(f"\nx = time / the same at {sizes[0]:,} questions on the same backend; the figures "
          "read every question of the last 12 months (the seed spreads n questions over "
          "max(30, n/90) days: 100,000 over 3 years).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
