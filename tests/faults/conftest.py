"""Fault tests' own servers: a private PostgreSQL and a private Redis that the tests may restart.

The shared PostgreSQL on 5432 and Redis on 6379 belong to everybody's tests and are never touched
here. PostgreSQL runs from Debian's binaries (`initdb`, `pg_ctl`) in a folder under /tmp owned by
the `postgres` user when the tests run as root (PostgreSQL refuses to run as root), with trust
authentication on 127.0.0.1 and a free port; Redis is `redis-server` without persistence on a free
port, so a restart loses its queue the way a crashed production Redis without AOF would.

Both are session-scoped and are stopped (and their folders removed) whatever happens; a test
that stopped one for a fault starts it again before it ends (the classes make that idempotent).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from hotline.simulator import MediaServer
from tests.support import ACCOUNT_SID, AUTH_TOKEN, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `slow`: together they take 1.5-2.5 minutes on 2 cores, so
    `make test` leaves them to `make test-slow` (which runs them with every other slow suite)."""
    folder = Path(__file__).parent
    for item in items:
        if folder in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed (/usr/lib/postgresql/*/bin)")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of our own, which a test may stop, start and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="hotline-faults-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root: run it as `postgres`
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True,
                                timeout=60, check=False)
        if result.returncode:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}\n{tail}")

    def _pg_ctl(self, *args: str) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c max_connections=200")
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-o", options, "-w", "-t", "30", *args)

    def running(self) -> bool:
        try:
            psycopg.connect(self.admin_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def start(self) -> None:
        if not self.running():
            self._pg_ctl("start")

    def stop(self) -> None:
        if self.running():
            self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every open connection is cut."""
        self._pg_ctl("-m", "fast", "restart")

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"hotline_faults_{secrets.token_hex(5)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        try:
            if self.data.exists():
                self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")
        except RuntimeError:
            pass  # already stopped
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRedis:
    """A redis-server of our own without persistence: a restart empties it."""

    def __init__(self, folder: Path) -> None:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start:\n"
                           + (self.folder / "redis.log").read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        """Kill it (SIGKILL, like a crash): whatever was queued is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the fault tests' own (never the shared one on 5432)."""
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A Redis of the fault tests' own (never the shared one on 6379)."""
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(private_postgres: PrivatePostgres) -> Iterator[str]:
    """A new database on the private PostgreSQL, which is running again after the test."""
    private_postgres.start()
    url = private_postgres.new_database()
    yield url
    private_postgres.start()


class TrickleMediaServer(MediaServer):
    """The media-host stand-in, able to send some bodies slowly: a few bytes, a pause, ..."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self._slow: list[tuple[int, float]] = []  # (bytes per piece, pause) for the next 200s
        self.trickling = threading.Event()  # set when a slow body has begun
        super().__init__(account_sid, auth_token)

    def slow_next(self, count: int, piece: int, pause: float) -> None:
        """Send the next count successful bodies piece bytes at a time, pause seconds apart."""
        with self._lock:
            self._slow.extend([(piece, pause)] * count)

    def _handler(self) -> type:
        media = self
        base = super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                status, body = media._answer(self.path, self.headers.get("Authorization", ""))
                with media._lock:
                    plan = media._slow.pop(0) if status == 200 and media._slow else None
                self.send_response(status)
                self.send_header("Content-Type", "audio/x-wav" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if plan is None:
                    self.wfile.write(body)
                    return
                piece, pause = plan
                media.trickling.set()
                try:
                    for start in range(0, len(body), piece):
                        self.wfile.write(body[start:start + piece])
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on us: that is the point

        return Handler


@pytest.fixture
def media() -> Iterator[TrickleMediaServer]:
    """The media host stand-in, with slow bodies on demand (overrides tests/support.py's)."""
    server = TrickleMediaServer(ACCOUNT_SID, AUTH_TOKEN)
    with server:
        yield server
