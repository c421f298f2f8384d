"""The built-in phone (/phone, demo mode) in headless Chromium with a fake microphone.

A whole call through the real webhooks: choose Russian, hear the pension explainer (its first part
a <Play>ed recording, the rest <Say> shown as text), ask a lawyer, speak a question into the
microphone (Chromium plays a prepared WAV as the microphone), press #, stay silent until the
hotline says goodbye and hangs up; then the page links to the question and a consultant finds
it, transcribed, in the queue. A second call hangs up while recording: the question is kept.

Chromium takes the fake microphone's file at launch, so this module launches its own browser
(`phone_browser`) rather than the session's one in conftest.py. The live server runs jobs inline
(Huey's immediate mode): the Record action's request downloads the recording from the page's
upload (over HTTP, from the same server, as from Twilio's media host) and transcribes it. The
Korean test model stands in for the Russian one, and the question is spoken in Korean words it
knows (tests/speech_support.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, Playwright, expect
from sqlalchemy import select

from hotline.config import Settings
from storage.db import unit_of_work
from storage.models import Call, Question, Recording
from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    TIMEOUT_MS,
    PolicyViolations,
    log_in,
    shot,
)
from tests.speech_support import KOREAN_MODEL, MOTHER_YES, sounds_like
from tests.support import make_wav, runtime
from tests.workspace_support import add_user

CONSULTANT = "aigerim@example.kz"
FROM = "+77015550199"
SPEAK_SECONDS = 2.5  # how long the caller speaks (the microphone's file plays once, then silence)
GATHER_SECONDS = 2  # <Gather timeout>: short, so that silence is quick to test


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone says: a Korean phrase the test model hears, between silences."""
    folder = tmp_path_factory.mktemp("microphone")
    spoken = make_wav(folder / "spoken.wav", MOTHER_YES.text, voice=MOTHER_YES.voice,
                      speed=MOTHER_YES.speed, rate=16000)
    target = folder / "microphone.wav"
    # A second of silence first: the microphone starts when the page asks for it, and the
    # page records after the beep that follows (a caller speaks after the beep).
    subprocess.run(["sox", str(spoken), "-D", str(target), "pad", "1.0", "1.0"], check=True)
    return target


@pytest.fixture(scope="module")
def explainer_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short recording of the pension explainer's first part (a person's recording wins)."""
    return make_wav(tmp_path_factory.mktemp("prompt") / "topic.pension.fact.wav",
                    "Мужчины выходят на пенсию в шестьдесят три года.")


@pytest.fixture
def settings(settings: Settings, explainer_wav: Path) -> Settings:
    """Demo mode, the Korean model as the Russian one, and one prompt recorded by a person."""
    target = settings.prompts_dir / "ru" / "topic.pension.fact.wav"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(explainer_wav, target)
    return settings.override(
        demo=True, vosk_model_ru=KOREAN_MODEL, gather_timeout=GATHER_SECONDS,
        twilio_media_hosts=(*settings.twilio_media_hosts, "127.0.0.1", "localhost"))


@pytest.fixture(scope="module")
def phone_browser(playwright: Playwright, microphone_wav: Path) -> Iterator[Browser]:
    """Chromium whose microphone plays microphone_wav once (`%noloop`; each getUserMedia starts
    it again from the beginning), then silence; and asks no permission for it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium",
                    pytrace=False)
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, "--use-fake-device-for-media-stream",
              "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-audio-capture={microphone_wav}%noloop"])
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def phone_context(phone_browser: Browser, server: str,
                  screenshots: Path) -> Iterator[BrowserContext]:
    """A browser context on the live server, allowed to use the microphone; the test fails if
    a page broke the Content-Security-Policy."""
    context = phone_browser.new_context(base_url=server, locale="en-US", viewport=DESKTOP,
                                        permissions=["microphone"])
    context.set_default_timeout(TIMEOUT_MS)
    violations = PolicyViolations()
    try:
        yield violations.watch(context)
    finally:
        context.close()
    assert violations.messages == []


def said(page: Page, text: str) -> Locator:
    """The transcript's line with text."""
    return page.locator("#phone-transcript li", has_text=text).first


def hear(page: Page, text: str) -> None:
    """Wait until the hotline has said text, pressing Skip through what comes before it.

    Headless Chromium has no speech voices, so <Say> text is shown for the time it would take
    to say; Skip ends that wait, as a reader who is done reading would.
    """
    skip_until(page, said(page, text))


def skip_until(page: Page, line: Locator) -> None:
    """Press Skip until line is in the transcript."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not line.is_visible():
        assert time.monotonic() < deadline, f"never there: {line}"
        if page.locator("#phone-skip").is_enabled():
            page.click("#phone-skip")
        page.wait_for_timeout(150)


def press(page: Page, key: str) -> None:
    """Press a key on the page's keypad."""
    page.locator(f'.keypad .key[data-key="{key}"]').click()


def test_a_question_recorded_on_the_page_is_transcribed_in_the_queue(
        phone_context: BrowserContext, live_app: Flask, server: str) -> None:
    flow = runtime(live_app).flow
    # A <Say> carries the spoken form (flows.content.Pronunciation: "SMS" is said
    # "эс-эм-эс"); the page shows the prompt as written, which it looks up.
    text = lambda key: flow.prompt("ru", key).text  # noqa: E731
    assert text("topic.pension.why") != flow.prompt("ru", "topic.pension.why").speech
    page = phone_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/phone?lang=en")
    expect(page.locator("h1")).to_have_text("Try the hotline")
    page.fill("#phone-from", FROM)
    shot(page, "30-phone-ready")

    # The greeting and the language menu; 2 for Russian (a key interrupts the prompt).
    page.click("#phone-call")
    hear(page, text("language.choose"))
    expect(page.locator("#phone-hangup")).to_be_enabled()
    shot(page, "31-phone-language-menu")
    press(page, "2")

    # The main menu in Russian; 1 for pensions.
    hear(page, text("menu.main.1"))
    press(page, "1")

    # The explainer: the fact is a person's recording, played to its end; the rest is <Say>.
    fact = page.locator("#phone-transcript li.play").first
    expect(fact).to_have_attribute("data-state", "played", timeout=15_000)
    # Its words, shown as written (the page looks the audio's prompt up).
    expect(fact).to_contain_text(flow.prompt("ru", "topic.pension.fact").text)
    hear(page, text("topic.pension.why"))
    shot(page, "32-phone-explainer")
    press(page, "2")  # ask a lawyer about it

    # The recording: the intro (skipped rather than read), the beep, the microphone, then #.
    hear(page, text("record.intro"))
    page.click("#phone-skip")
    recording = page.locator("#phone-transcript li.recording")
    expect(recording).to_be_visible()
    page.wait_for_timeout(SPEAK_SECONDS * 1000)
    shot(page, "33-phone-recording")
    press(page, "#")
    # The action's request downloads and transcribes the question inline (jobs run inline here).
    expect(recording).to_have_attribute("data-state", "recorded", timeout=30_000)
    expect(said(page, text("record.done").split("{")[0].strip()[:40])).to_be_visible(
        timeout=30_000)
    shot(page, "34-phone-recorded")

    # Silence after the promise: the <Gather> times out, its action says goodbye and hangs up.
    skip_until(page, page.locator("#phone-transcript li.silence"))
    hear(page, text("goodbye"))
    skip_until(page, page.locator("#phone-transcript li.ended"))
    expect(page.locator("#phone-transcript li.ended")).to_have_text("The hotline hung up.")
    link = page.locator("#phone-result a.question-link")
    expect(link).to_be_visible()
    expect(page.locator("#phone-status")).to_have_text("The call has ended.")
    shot(page, "35-phone-call-ended")
    question_id = int(link.get_attribute("data-question-id") or "0")
    assert link.get_attribute("href") == f"/questions/{question_id}"
    assert link.get_attribute("data-transcription") == "done"
    expect(page.locator("#phone-result")).to_contain_text("transcription: done")
    assert not errors, errors

    # What the hotline kept: a normal voice question, downloaded and transcribed.
    with unit_of_work(runtime(live_app).sessions) as db:
        question = db.get(Question, question_id)
        assert question is not None and question.call is not None
        assert (question.language, question.topic, question.channel) == ("ru", "pension", "voice")
        assert question.call.from_number == FROM and question.call.status == "completed"
        recording_row = db.scalars(select(Recording).where(
            Recording.question_id == question_id)).one()
        assert recording_row.download_state == "stored", (recording_row.last_error,
                                                          recording_row.download_attempts)
        assert re.fullmatch(rf"{re.escape(server)}/phone/media/2010-04-01/Accounts/AC\w+"
                            r"/Recordings/RE[0-9a-f]{32}", recording_row.source_url)
        audio = runtime(live_app).settings.audio_dir / (recording_row.file_path or "")
        with wave.open(str(audio), "rb") as stored:
            assert (stored.getframerate(), stored.getnchannels(), stored.getsampwidth()) == (
                8000, 1, 2)
            # The microphone's phrase, silence trimmed as <Record trim="trim-silence"> asks.
            assert 0.8 < stored.getnframes() / 8000 < SPEAK_SECONDS
        assert question.transcription_state == "done"
        assert question.transcript is not None
        transcript = question.transcript.text
    assert sounds_like(MOTHER_YES, transcript), transcript

    # A consultant finds it, transcribed, in the queue, and opens it from the page's link.
    add_user(live_app, CONSULTANT, role="consultant", name="Aigerim Nurlanovna")
    queue = log_in(phone_context, CONSULTANT)
    row = queue.locator(f"tr#question-{question_id}")
    expect(row).to_be_visible()
    expect(row.locator("td.asked")).to_have_text(" ".join(transcript.split()))  # what was heard
    shot(queue, "36-queue-with-the-phone-question")
    with page.expect_navigation():
        link.click()
    expect(page).to_have_url(re.compile(rf"/questions/{question_id}$"))
    expect(page.locator("main")).to_contain_text(transcript.split()[0])
    shot(page, "37-question-from-the-phone")


def test_hanging_up_while_recording_keeps_the_question(phone_context: BrowserContext,
                                                       live_app: Flask) -> None:
    flow = runtime(live_app).flow
    page = phone_context.new_page()
    page.goto("/phone?lang=ru")
    expect(page.locator("#phone-call")).to_have_text("Позвонить на линию")
    page.set_viewport_size(PHONE)
    shot(page, "38-phone-small-screen-ru")
    page.click("#phone-call")
    hear(page, flow.prompt("ru", "language.choose").text)
    press(page, "2")
    hear(page, flow.prompt("ru", "menu.main.1").text)
    press(page, "0")  # in the main menu: leave a question for a lawyer
    hear(page, flow.prompt("ru", "record.intro").text)
    page.click("#phone-skip")
    recording = page.locator("#phone-transcript li.recording")
    expect(recording).to_be_visible()
    page.wait_for_timeout(SPEAK_SECONDS * 1000)
    page.click("#phone-hangup")  # as rural callers do: hanging up saves the question
    expect(recording).to_have_attribute("data-state", "recorded", timeout=30_000)
    link = page.locator("#phone-result a.question-link")
    # After the Record action's request, which downloads and transcribes (jobs run inline).
    expect(link).to_be_visible(timeout=30_000)
    shot(page, "39-phone-hung-up-while-recording")
    question_id = int(link.get_attribute("data-question-id") or "0")
    with unit_of_work(runtime(live_app).sessions) as db:
        question = db.get(Question, question_id)
        assert question is not None and question.call is not None
        assert (question.language, question.topic) == ("ru", None)
        assert question.call.status == "completed"
        assert question.transcript is not None
        assert sounds_like(MOTHER_YES, question.transcript.text), question.transcript.text
    # No more webhooks after the hang-up than Twilio would send: the action's answer is not
    # followed (nothing after the recording line but the hang-up).
    lines = page.locator("#phone-transcript li").all_inner_texts()
    assert lines[-1] == "Вы положили трубку." and lines[-2].startswith("● Записано"), lines



# The browser's microphone prompt, answered after window.__PROMPT_MS__ (never when negative).
SLOW_PERMISSION = """(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => window.__PROMPT_MS__ < 0
    ? new Promise(() => {})
    : new Promise((ok) => setTimeout(() => ok(real(constraints)), window.__PROMPT_MS__));
})();"""


@pytest.mark.parametrize("prompt_ms", [-1, 2000])
def test_hanging_up_while_the_browser_asks_for_the_microphone_ends_the_call(
        phone_context: BrowserContext, live_app: Flask, prompt_ms: int) -> None:
    """The first-time visitor hangs up while the browser still asks for the microphone: the
    call ends there (not stuck on "connected"), and a permission given later records nothing
    and leaves no question."""
    flow = runtime(live_app).flow
    phone_context.add_init_script(f"window.__PROMPT_MS__ = {prompt_ms};" + SLOW_PERMISSION)
    page = phone_context.new_page()
    page.goto("/phone?lang=en")
    page.click("#phone-call")
    hear(page, flow.prompt("ru", "language.choose").text)
    press(page, "2")
    hear(page, flow.prompt("ru", "menu.main.1").text)
    press(page, "0")
    hear(page, flow.prompt("ru", "record.intro").text)
    page.click("#phone-skip")
    page.wait_for_timeout(500)
    # The beep comes once the microphone is there: not while the browser still asks.
    expect(page.locator("#phone-transcript li.beep")).to_have_count(0)
    page.click("#phone-hangup")
    expect(page.locator("#phone-status")).to_have_text("The call has ended.", timeout=10_000)
    expect(page.locator("#phone-call")).to_be_enabled()
    page.wait_for_timeout(max(prompt_ms, 0) + 1500)  # the late permission, if any
    assert page.locator("#phone-transcript li.recording").count() == 0
    with unit_of_work(runtime(live_app).sessions) as db:
        assert db.scalars(select(Question)).all() == []


@pytest.mark.parametrize("language", ["ru", "kk", "en"])
def test_the_phone_fits_the_narrowest_screen(phone_context: BrowserContext,
                                             language: str) -> None:
    """On a 320 px screen the Call and Hang up buttons stay inside the phone, in every
    language ("Положить трубку" pushed Hang up 20 px out, and the page scrolled sideways)."""
    page = phone_context.new_page()
    page.set_viewport_size({"width": 320, "height": 640})
    page.goto(f"/phone?lang={language}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    frame = page.locator(".phone").bounding_box()
    for button in ("#phone-call", "#phone-hangup"):
        box = page.locator(button).bounding_box()
        assert frame and box and box["x"] + box["width"] <= frame["x"] + frame["width"], button
    shot(page, f"phone-320-{language}")


def test_a_key_held_down_is_one_press(phone_context: BrowserContext, live_app: Flask) -> None:
    """A key held repeats its keydown: one choice, not Russian, then a topic, then "ask a
    lawyer" as the repeats pass through each menu."""
    flow = runtime(live_app).flow
    page = phone_context.new_page()
    page.goto("/phone?lang=en")
    page.click("#phone-call")
    hear(page, flow.prompt("ru", "language.choose").text)
    for _repeat in range(4):
        page.keyboard.down("2")  # again while down: a repeat
        page.wait_for_timeout(300)
    page.keyboard.up("2")
    hear(page, flow.prompt("ru", "menu.main.1").text)
    page.wait_for_timeout(1000)
    lines = page.locator("#phone-transcript li.key").all_inner_texts()
    assert lines == ["You pressed 2"], lines
    page.click("#phone-hangup")


def test_leaving_the_page_in_a_call_asks_first(phone_context: BrowserContext,
                                               live_app: Flask) -> None:
    """A link, a reload or closing the tab in a call would lose the question being recorded:
    the browser asks first; with no call it does not."""
    flow = runtime(live_app).flow
    page = phone_context.new_page()
    dialogs: list[str] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()  # stay

    page.on("dialog", answer)
    page.goto("/phone?lang=en")
    page.click("#phone-from")  # the page has been used, so a browser may ask
    page.close(run_before_unload=True)
    time.sleep(0.5)
    page = phone_context.new_page()  # (the sync API takes the browser's events in its calls)
    assert dialogs == []
    page.on("dialog", answer)
    page.goto("/phone?lang=en")
    page.click("#phone-call")
    hear(page, flow.prompt("ru", "language.choose").text)
    page.close(run_before_unload=True)
    page.wait_for_timeout(500)
    assert dialogs == ["beforeunload"]
    assert not page.is_closed()  # dismissed: still in the call
    page.click("#phone-hangup")
    expect(page.locator("#phone-status")).to_have_text("The call has ended.")


def test_a_page_opened_before_a_login_elsewhere_still_calls(phone_context: BrowserContext,
                                                            live_app: Flask) -> None:
    """A coordinator opens /phone, then logs in to the workspace in another tab (a new session,
    a new CSRF token): the page's next call still works, says when it is connected, and on a
    phone's screen the transcript scrolls in its own box, leaving the keypad in view."""
    add_user(live_app, "visitor@example.kz", role="coordinator", name="Dana Coordinator")
    flow = runtime(live_app).flow
    page = phone_context.new_page()
    page.goto("/phone?lang=ru")
    page.set_viewport_size(PHONE)
    log_in(phone_context, "visitor@example.kz").close()
    page.bring_to_front()
    page.click("#phone-call")
    hear(page, flow.prompt("ru", "language.choose").speech)  # what <Say> is given
    expect(page.locator("#phone-status")).to_have_text(
        "Соединено. Слушайте и нажимайте клавиши, когда попросят.")
    press(page, "2")
    hear(page, flow.prompt("ru", "nav.language").speech)
    expect(page.locator("#phone-transcript li.error")).to_have_count(0)
    expect(page.locator(".keypad")).to_be_in_viewport()
    shot(page, "40-phone-after-a-login-elsewhere")
    page.click("#phone-hangup")
    expect(page.locator("#phone-status")).to_have_text("Звонок завершён.")
    # The call the page made after the login reached the hotline's own webhooks, signed: the
    # hotline kept it, with the key pressed and the language it chose, and its end.
    page.wait_for_function("() => window.phoneDemo.finished.length === 1")
    [sid] = page.evaluate("window.phoneDemo.finished")
    with unit_of_work(runtime(live_app).sessions) as db:
        call = db.scalars(select(Call).where(Call.call_sid == sid)).one()
        assert call.status == "completed"
        assert [(k["node"], k["digits"]) for k in call.keys] == [("language", "2")]
