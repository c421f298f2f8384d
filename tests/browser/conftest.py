"""Browser tests: the real app on a local HTTP server, driven in headless Chromium by Playwright.

The live server
    The app is `hotline.app.create_app(settings)` on the suite's `settings` (tests/support.py),
    built through `make_app` (jobs run inline), on SQLite only: `database_url` is overridden here,
    so these tests are not repeated on PostgreSQL (the storage tests cover both). werkzeug's
    `make_server` serves it, threaded, on 127.0.0.1 and a port the system picks, from a daemon
    thread; it is shut down after each test.

Logging in over plain http
    Demo mode stays off, so the app behaves as in production. The one change: this app's
    SESSION_COOKIE_SECURE is set to False after it is created (hotline/auth.py makes the cookie
    https-only unless in demo mode), because the live server speaks http on the loopback address.
    Nothing else about sessions, CSRF or roles differs from production.

The browser
    Debian's `chromium` (`make test` installs it through `make system-deps`) at
    /usr/bin/chromium, or $HOTLINE_CHROMIUM, launched once per test session through Playwright's
    `executable_path` (`playwright install` is never run). Each test opens its own contexts (a
    context is one consultant's cookie jar), with English as the interface language.

Data
    Made with the project's own code: accounts with `hotline users add` (`add_user`), a voice
    question through `storage.questions.record_question`, its recording (an espeak-ng WAV)
    stored under `settings.audio_dir` at `relative_audio_path` and marked with
    `mark_recording_stored`, and its transcript with `storage.transcripts.save_transcript`.

Screenshots
    `shot(page, name)` saves a full-page PNG under test-artifacts/screenshots/ at the repository
    root: the folder is emptied and created anew when a test session starts, so it holds the
    last run's pictures; `make clean` removes it; git ignores it.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from werkzeug.serving import make_server

from hotline.config import Settings
from hotline.recordings import relative_audio_path
from storage.calls import start_call
from storage.db import unit_of_work
from storage.questions import mark_recording_stored, record_question
from storage.transcripts import save_transcript
from tests.paths import SCREENSHOTS
from tests.support import CALLER, runtime
from tests.workspace_support import PASSWORD, add_user, users_cli

CHROMIUM = os.environ.get("HOTLINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    # The closed network refuses Chromium's own background connections; don't try them.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The audio test starts playback from a script, without a click.
    "--autoplay-policy=no-user-gesture-required",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
TIMEOUT_MS = 10_000

TRANSCRIPT = "здравствуйте мне шестьдесят лет когда мне назначат пенсию"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `browser` (select with -m browser)."""
    folder = Path(__file__).parent
    for item in items:
        if folder in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides the suite's SQLite/PostgreSQL parametrisation)."""
    return f"sqlite:///{tmp_path / 'data' / 'hotline.sqlite3'}"


# -- the app and its server ---------------------------------------------------------------------

@pytest.fixture
def live_app(make_app: Callable[[Settings], Flask], settings: Settings) -> Flask:
    """The hotline app on the test settings, its session cookie allowed over http."""
    application = make_app(settings)
    application.config["SESSION_COOKIE_SECURE"] = False
    return application


@pytest.fixture
def server(live_app: Flask) -> Iterator[str]:
    """Serve the app on 127.0.0.1 and a free port; yield its base URL."""
    http = make_server("127.0.0.1", 0, live_app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                              name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_port}"
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=10)


# -- data ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Seeded:
    """Who can log in, and the question they work on."""

    consultant: str
    second_consultant: str
    coordinator: str
    question_id: int
    audio_seconds: float


def wav_seconds(path: Path) -> float:
    """The length of a WAV file in seconds."""
    with wave.open(str(path), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


@pytest.fixture
def seeded(live_app: Flask, settings: Settings, question_wav: Path) -> Seeded:
    """Two consultants, a coordinator, and a voice question with its recording and transcript."""
    for email, name, phone in (("aigerim@example.kz", "Aigerim Nurlanovna", "+77015550101"),
                               ("bolat@example.kz", "Bolat Serikuly", "+77015550102")):
        # Consultants with their own phone, as the calling-back panel expects.
        result = users_cli(live_app, ["add", email, "--role", "consultant", "--name", name,
                                      "--phone", phone], input=f"{PASSWORD}\n{PASSWORD}\n")
        assert result.exit_code == 0, result.output
    add_user(live_app, "dana@example.kz", role="coordinator", name="Dana Coordinator")
    now = datetime.now(UTC)
    sid = "RE" + "b" * 32
    call_sid = "CA" + "c" * 32
    relative = relative_audio_path(sid, now)
    target = settings.audio_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(question_wav, target)
    seconds = wav_seconds(target)
    with unit_of_work(runtime(live_app).sessions) as db:
        start_call(db, call_sid=call_sid, from_number=CALLER, to_number="+77000000000", now=now)
        question, recording, _new = record_question(
            db, recording_sid=sid, call_sid=call_sid,
            recording_url=f"https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/{sid}",
            duration=round(seconds), language="ru", topic="pension", now=now)
        db.flush()
        mark_recording_stored(db, recording, relative, now)
        words = [{"word": word, "start": i * 0.4, "end": i * 0.4 + 0.35,
                  "conf": 0.45 if word == "пенсию" else 0.95}
                 for i, word in enumerate(TRANSCRIPT.split())]
        save_transcript(db, question.id, language="ru", model="vosk-test", text=TRANSCRIPT,
                        words=words, confidence=0.9, duration=seconds, elapsed=0.5, now=now)
        question_id = question.id
    return Seeded(consultant="aigerim@example.kz", second_consultant="bolat@example.kz",
                  coordinator="dana@example.kz", question_id=question_id,
                  audio_seconds=seconds)


# -- the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver, for the whole test session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's headless Chromium, launched once."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium "
                    "(or set HOTLINE_CHROMIUM to a Chromium binary)", pytrace=False)
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()


NewContext = Callable[..., BrowserContext]


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """test-artifacts/screenshots/, emptied once per run (tests/conftest.py:
    pytest_sessionstart, in the main process only: with pytest-xdist each worker is a test
    session of its own, and one emptying it would delete the others' screenshots)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


class PolicyViolations:
    """What Chromium refused in a context's pages because of the Content-Security-Policy
    (hotline.app): it says so on the console, and the page goes on without the refused code
    or style, so only the console tells."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def watch(self, context: BrowserContext) -> BrowserContext:
        context.on("console", lambda message: self.messages.append(message.text)
                   if "Content Security Policy" in message.text else None)
        return context


@pytest.fixture
def new_context(browser: Browser, server: str, screenshots: Path) -> Iterator[NewContext]:
    """Open browser contexts (one per consultant) on the live server; close them afterwards,
    and fail the test if any of their pages broke the Content-Security-Policy."""
    opened: list[BrowserContext] = []
    violations = PolicyViolations()

    def open_context(**options: Any) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=server, locale="en-US", **options)
        context.set_default_timeout(TIMEOUT_MS)
        opened.append(violations.watch(context))
        return context

    yield open_context
    for context in opened:
        context.close()
    assert violations.messages == []


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(context: BrowserContext, email: str, password: str = PASSWORD,
           screenshot: str | None = None) -> Page:
    """Open /login in English, fill in the form, send it; return the page (on /queue)."""
    page = context.new_page()
    page.goto("/login?lang=en")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    if screenshot:
        shot(page, screenshot)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/queue(\?|$)"))
    return page
