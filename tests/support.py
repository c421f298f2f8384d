"""Fixtures and helpers for tests that drive the web app the way Twilio does."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from hotline.app import create_app
from hotline.cli import _create_app as create_from_env
from hotline.cli import main as hotline_cli
from hotline.config import Settings
from hotline.jobs import huey
from hotline.runtime import Runtime
from hotline.simulator import FlaskTransport, MediaServer, PhoneSimulator, new_sid
from storage.db import unit_of_work
from storage.models import Base
from tests.twilio_api import TwilioApi

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-0123456789"
BASE_URL = "https://hotline.test"
CALLER = "+77011234567"


def make_wav(target: Path, text: str, voice: str = "ru", rate: int = 8000,
             speed: int = 175) -> Path:
    """Speak text with espeak-ng and convert it to a telephone WAV with sox (no dither)."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are needed (make test installs them)", pytrace=False)
    raw = target.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                   check=True)
    subprocess.run(["sox", str(raw), "-D", "-r", str(rate), "-c", "1", "-b", "16", str(target)],
                   check=True)
    raw.unlink()
    return target


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Russian question as Twilio would record it (8 kHz mono)."""
    folder = tmp_path_factory.mktemp("audio")
    return make_wav(folder / "question-ru.wav",
                    "Здравствуйте. Мне шестьдесят лет. Когда мне назначат пенсию?")


@pytest.fixture(scope="session")
def kazakh_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kazakh question (8 kHz mono)."""
    folder = tmp_path_factory.mktemp("audio-kk")
    return make_wav(folder / "question-kk.wav",
                    "Сәлеметсіз бе. Мүгедектік жәрдемақысын қалай алуға болады?", voice="kk")


@pytest.fixture
def media() -> Iterator[MediaServer]:
    """A local stand-in for Twilio's media host."""
    with MediaServer(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def api() -> Iterator[TwilioApi]:
    """A local stand-in for Twilio's REST API (tests point TWILIO_API_URL at it)."""
    with TwilioApi(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, migrated_url: str, media: MediaServer) -> Settings:
    """Test settings: real database, the local media host allowed, no waiting between retries."""
    return Settings(
        data_dir=tmp_path / "instance",
        database_url=migrated_url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_phone_number="+77000000000",
        twilio_media_hosts=("api.twilio.com", media.host),
        download_attempts=4,
        download_backoff=0.0,
        # A closed local port: a REST call no test set up a stand-in for fails at once, and
        # never reaches Twilio (retention's deletes, say).
        twilio_api_url="http://127.0.0.1:9",
    )


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    """Build apps with jobs run inline (Huey's immediate mode); close their pools afterwards."""
    built: list[Flask] = []

    def build(settings: Settings) -> Flask:
        huey.immediate = True
        built.append(create_app(settings))
        return built[-1]

    yield build
    for application in built:
        runtime(application).dispose()
    # Immediate mode's in-memory store lives as long as the process: a nightly job's claim
    # (jobs.first_tonight) made by one test must not make the next one skip its run.
    huey.storage.flush_results()


@pytest.fixture
def app(make_app: Callable[[Settings], Flask], settings: Settings) -> Flask:
    """The hotline app on the test settings."""
    return make_app(settings)


def runtime(application: Flask) -> Runtime:
    """Return the app's runtime."""
    rt: Runtime = application.extensions["hotline"]
    return rt


@pytest.fixture
def db(app: Flask) -> Callable[[], AbstractContextManager[Session]]:
    """Open a committed-on-exit session on the app's database, for assertions."""
    return lambda: unit_of_work(runtime(app).sessions)


@pytest.fixture
def phone(app: Flask, media: MediaServer) -> PhoneSimulator:
    """A caller's phone, with Twilio's platform in between."""
    return PhoneSimulator(FlaskTransport(app), BASE_URL, account_sid=ACCOUNT_SID,
                          auth_token=AUTH_TOKEN, caller=CALLER, media=media,
                          flow=runtime(app).flow)


class Twilio:
    """Posts single webhooks as Twilio would, signed (or not) with the account's token."""

    def __init__(self, application: Flask) -> None:
        self.client = application.test_client()
        self.validator = RequestValidator(AUTH_TOKEN)

    def post(self, path: str, data: dict[str, str], *, signature: str | None = None,
             base_url: str = BASE_URL, signed_url: str | None = None,
             headers: dict[str, str] | None = None) -> TestResponse:
        """Post data to path; sign it for signed_url (default: the URL posted to)."""
        url = base_url + path
        if signature is None:
            signature = self.validator.compute_signature(signed_url or url, data)
        all_headers = {"X-Twilio-Signature": signature, **(headers or {})}
        if not signature:
            all_headers.pop("X-Twilio-Signature")
        return self.client.post(path, base_url=base_url, data=data, headers=all_headers)

    def post_url(self, url: str, data: dict[str, str]) -> TestResponse:
        """Post data to an absolute URL taken from TwiML."""
        path = url.removeprefix(BASE_URL)
        return self.post(path, data)


@pytest.fixture
def twilio(app: Flask) -> Twilio:
    """Twilio's side of single webhooks."""
    return Twilio(app)


def call_form(call_sid: str | None = None, **extra: str) -> dict[str, str]:
    """A voice webhook's form fields."""
    return {"CallSid": call_sid or new_sid("CA"), "AccountSid": ACCOUNT_SID, "From": CALLER,
            "To": "+77000000000", **extra}


def twiml(response: TestResponse) -> ET.Element:
    """Parse a TwiML response, checking it is one."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    root = ET.fromstring(response.get_data(as_text=True))
    assert root.tag == "Response"
    return root


def spoken(element: ET.Element) -> list[str]:
    """Texts of every <Say> under element."""
    return [" ".join("".join(say.itertext()).split()) for say in element.iter("Say")]


def row_counts(session: Session) -> dict[str, int]:
    """Rows in every table."""
    return {table.name: session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables}


def run_cli(application: Flask | None, args: list[str],
            env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run a `hotline` command against application (or the environment's app); input is
    what is typed at its prompts (then the end of input)."""
    obj = ScriptInfo(create_app=(lambda: application) if application else create_from_env)
    return CliRunner().invoke(hotline_cli, args, obj=obj, env=env, input=input,
                              catch_exceptions=False)


def terminate_backend(engine: Engine, pid: int) -> None:
    """End a PostgreSQL connection from the server's side, as a restart does, and wait until
    its process is gone (so its goodbye has been sent)."""
    with engine.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 10
        while other.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                            {"pid": pid}).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.05)


def free_port() -> int:
    """A TCP port nobody listens on right now, for a server a test starts as a process.

    Not one the kernel picks (port 0): between this call and the server's own bind, another
    test process (pytest-xdist) may open a server on port 0 and get the very same port. The
    port comes from 20000-31999, below Linux's range for port 0 (32768 and up), in a slice of
    its own for each xdist worker (PYTEST_XDIST_WORKER, gw0, gw1...).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    slot = int(worker) % 12 if worker.isdigit() else 0
    first = 20000 + slot * 1000
    for port in random.sample(range(first, first + 1000), 1000):  # not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + 999}")


_Result = TypeVar("_Result")


def beside_held_writer_queue(database_url: str, work: Callable[[], _Result]) -> _Result:
    """Run work while another writer holds the SQLite database's writer queue (its
    `-writers` lock file, storage.db.WriterQueueConnection); fail if work waits for it.

    Read-only work goes on beside the holder; work that joins the queue waits until it is
    let go, which here is once work has had 30 s to finish.
    """
    path = database_url.removeprefix("sqlite:///")
    assert path != database_url, "an SQLite file database has the writer queue"
    done = threading.Event()
    results: list[_Result] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as error:  # raised again by the caller's thread
            errors.append(error)
        finally:
            done.set()

    fd = os.open(f"{path}-writers", os.O_RDWR | os.O_CREAT)
    thread = threading.Thread(target=run)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread.start()
        finished = done.wait(30)
    finally:
        os.close(fd)  # and with it the lock
        if thread.ident is not None:  # started
            thread.join(30)
    assert finished, "the work waited for the writer queue"
    if errors:
        raise errors[0]
    return results[0]


_Outcome = TypeVar("_Outcome")


def in_two_threads(
    factory: sessionmaker[Session],
    work: Callable[[Session], _Outcome],
    prepare: Callable[[Session, threading.Barrier], None],
) -> list[_Outcome]:
    """Run work in two threads at once, each in its own unit of work (prepare first: where
    the two meet, at the barrier); return both results, in the order they finished."""
    return at_once(factory, [work, work], prepare)


def at_once(
    factory: sessionmaker[Session],
    works: list[Callable[[Session], _Outcome]],
    prepare: Callable[[Session, threading.Barrier], None],
) -> list[_Outcome]:
    """Run each work in a thread of its own at once, each in its own unit of work (prepare
    first: where they meet, at the barrier); return the results, in the order they finished."""
    barrier = threading.Barrier(len(works), timeout=30)
    results: list[_Outcome] = []
    errors: list[BaseException] = []

    def run(work: Callable[[Session], _Outcome]) -> None:
        try:
            with unit_of_work(factory) as session:
                prepare(session, barrier)
                results.append(work(session))
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    assert len(results) == len(works)
    return results


@contextmanager
def held_meanwhile(
    open_session: Callable[[], AbstractContextManager[Session]],
    take: Callable[[Session], object],
    then: Callable[[Session], object] = lambda _session: None,
    hold: float = 0.5,
) -> Iterator[None]:
    """Another transaction, in a thread: take (its locks), hold them `hold` seconds, then
    (more writes) and commit. The with block runs while they are held: what the test checks
    waits for that transaction, or does not. The thread's errors are raised at the end."""
    taken = threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with open_session() as session:
                take(session)
                taken.set()
                time.sleep(hold)
                then(session)
        except BaseException as error:  # re-raised in the test's thread
            errors.append(error)
            taken.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert taken.wait(30)
    try:
        yield
    finally:
        thread.join(60)
    if errors:
        raise errors[0]
