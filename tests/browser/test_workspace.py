"""The consultants' workspace in headless Chromium: log in, claim, listen, write an outcome, and
what a second consultant and a consultant without the coordinator's role are refused.

Each step leaves a screenshot in test-artifacts/screenshots/ (see conftest.py).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select

from storage.db import unit_of_work
from storage.models import (
    CALLBACK_ENDED,
    QUESTION_CLAIMED,
    QUESTION_CLOSED,
    QUESTION_WAITING,
    SMS_OUT,
    CallbackAttempt,
    Note,
    Question,
    SmsMessage,
    User,
    utcnow,
)
from tests.browser.conftest import PHONE, NewContext, Seeded, log_in, shot
from tests.support import runtime
from tests.workspace_support import PASSWORD


def question_state(app: Flask, question_id: int) -> tuple[str, str | None, str | None]:
    """The question's status, its holder's email and its close reason, from the database."""
    with unit_of_work(runtime(app).sessions) as db:
        question = db.get(Question, question_id)
        assert question is not None
        holder = db.get(User, question.claimed_by_id) if question.claimed_by_id else None
        return question.status, holder.email if holder else None, question.close_reason


def referral_of(app: Flask, question_id: int) -> str | None:
    """The organisation the question was referred to, from the database."""
    with unit_of_work(runtime(app).sessions) as db:
        question = db.get(Question, question_id)
        assert question is not None
        return question.referral


def claim_button(page: Page, question_id: int):  # type: ignore[no-untyped-def]
    """The Claim button in the question's row of the queue."""
    return page.locator(f"tr#question-{question_id} form.claim button")


def claim(page: Page, question_id: int) -> None:
    """Open the queue and press Claim in the question's row; return once the answer loaded."""
    page.goto("/queue")
    with page.expect_navigation():
        claim_button(page, question_id).click()


# -- logging in ---------------------------------------------------------------------------------

def test_a_consultant_logs_in_and_sees_the_queue(new_context: NewContext,
                                                 seeded: Seeded) -> None:
    context = new_context()
    page = context.new_page()
    page.goto("/queue")
    page.wait_for_url(re.compile(r"/login"))  # nothing of the workspace without logging in
    assert "Waiting questions" not in page.content()

    page.goto("/login?lang=en")
    page.fill("input[name=email]", seeded.consultant)
    page.fill("input[name=password]", "not the password")
    page.click("main form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("Wrong email or password")
    shot(page, "01-login-wrong-password")

    page = log_in(context, seeded.consultant, screenshot="02-login-filled-in")
    assert page.url.endswith("/queue")
    expect(page.locator("h1")).to_have_text("Waiting questions")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    row = page.locator(f"tr#question-{seeded.question_id}")
    expect(row).to_be_visible()
    expect(claim_button(page, seeded.question_id)).to_be_visible()
    shot(page, "03-queue")

    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    small = log_in(phone, seeded.consultant)
    expect(small.locator(f"tr#question-{seeded.question_id}")).to_be_visible()
    shot(small, "03-queue-phone")
    # Opening a question without claiming it: a link big enough for a finger (44 px).
    box = small.locator(f"tr#question-{seeded.question_id} td.id a").bounding_box()
    assert box is not None and box["width"] >= 44 and box["height"] >= 44, box


def test_the_users_list_on_a_phone_names_each_value(new_context: NewContext,
                                                    seeded: Seeded) -> None:
    """On a phone the table is a card a row: each value says what it is ("Phone: —")."""
    page = log_in(new_context(viewport=PHONE, is_mobile=True, has_touch=True),
                  seeded.coordinator)
    page.goto("/admin/users?lang=ru")
    labels = page.evaluate("""() => [...document.querySelectorAll('table.users tbody tr')]
        .map(row => [...row.cells].map(cell => getComputedStyle(cell, '::before').content))""")
    assert labels and all(row[2:6] == ['"Роль: "', '"Телефон: "', '"Активен: "',
                                       '"Последний вход (Алматы): "'] for row in labels), labels
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "03-users-phone")


# -- claiming -----------------------------------------------------------------------------------

def test_claiming_opens_the_question_and_holds_it(new_context: NewContext, seeded: Seeded,
                                                  live_app: Flask) -> None:
    assert question_state(live_app, seeded.question_id)[:2] == (QUESTION_WAITING, None)
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)
    expect(page).to_have_url(re.compile(rf"/questions/{seeded.question_id}(\?|$)"))
    shot(page, "04-claimed-question")
    assert question_state(live_app, seeded.question_id)[:2] == (QUESTION_CLAIMED,
                                                                seeded.consultant)

    # The default tab lists questions due now; claimed ones are under "All open".
    page.goto("/queue?status=open")
    expect(claim_button(page, seeded.question_id)).to_have_count(0)
    expect(page.locator(f"tr#question-{seeded.question_id}")).to_contain_text("you")


def test_a_second_consultant_cannot_claim_a_held_question(new_context: NewContext,
                                                          seeded: Seeded,
                                                          live_app: Flask) -> None:
    first = log_in(new_context(), seeded.consultant)
    second = log_in(new_context(), seeded.second_consultant)
    # The second consultant's queue is open from before the first one claims.
    expect(claim_button(second, seeded.question_id)).to_be_visible()

    claim(first, seeded.question_id)

    # Pressing Claim on the stale page: "Already taken" (409), and the question stays held.
    with second.expect_navigation() as navigation:
        claim_button(second, seeded.question_id).click()
    response = navigation.value
    assert response is not None and response.status == 409
    expect(second.locator("h1")).to_have_text("Already taken")
    expect(second.locator("main")).to_contain_text("Aigerim Nurlanovna")
    shot(second, "05-second-consultant-already-taken")
    assert question_state(live_app, seeded.question_id)[:2] == (QUESTION_CLAIMED,
                                                                seeded.consultant)

    # A fresh queue shows who holds it and offers no Claim button.
    second.goto("/queue?status=open")
    row = second.locator(f"tr#question-{seeded.question_id}")
    expect(row).to_contain_text("Aigerim Nurlanovna")
    expect(claim_button(second, seeded.question_id)).to_have_count(0)
    shot(second, "06-second-consultant-queue")


# -- the question's page: audio and outcome -----------------------------------------------------

AUDIO = "document.querySelector('audio#question-audio')"


def test_the_recording_loads_and_plays(new_context: NewContext, seeded: Seeded) -> None:
    page = log_in(new_context(), seeded.consultant)
    audio_answers: list[tuple[int, str | None]] = []
    page.on("response", lambda r: audio_answers.append((r.status, r.headers.get("content-range")))
            if r.url.endswith(f"/questions/{seeded.question_id}/audio") else None)
    claim(page, seeded.question_id)
    expect(page.locator("audio#question-audio")).to_have_count(1)
    # Opening the page sends none of the resident's voice (preload="none"): the audit log's
    # "listened" is a press of play, not a page opened.
    page.wait_for_load_state("networkidle")
    assert audio_answers == []

    page.evaluate(f"{AUDIO}.play()")
    page.wait_for_function(f"() => {AUDIO}.readyState >= 2 && {AUDIO}.currentTime > 0")
    state = page.evaluate(
        f"() => {{ const a = {AUDIO}; return {{duration: a.duration, readyState: a.readyState,"
        " currentTime: a.currentTime, paused: a.paused, error: a.error && a.error.code}; }")
    assert state["error"] is None, state
    assert state["readyState"] >= 2 and state["currentTime"] > 0 and not state["paused"], state
    assert abs(state["duration"] - seeded.audio_seconds) < 0.1, (state, seeded.audio_seconds)
    # Chromium asks for byte ranges; the route answers them, so the player can seek.
    assert any(status == 206 and (crange or "").startswith("bytes ")
               for status, crange in audio_answers), audio_answers
    shot(page, "07-question-audio-playing")

    # Seeking near the end plays to the end.
    page.evaluate(f"{AUDIO}.currentTime = {AUDIO}.duration - 0.3")
    page.wait_for_function(f"() => {AUDIO}.ended")

    phone = new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    small = log_in(phone, seeded.consultant)
    small.goto(f"/questions/{seeded.question_id}")
    expect(small.locator("audio#question-audio")).to_be_visible()
    shot(small, "07-question-phone")


def send_outcome(page: Page, outcome: str, referral: str = "", shots: str = "") -> None:
    """Choose an outcome in the question page's outcome form, write the referral, save (the
    screenshots are named after the outcome, or `shots`)."""
    form = page.locator("form#outcome-form")
    expect(form).to_be_visible()
    form.locator(f"input[name=outcome][value={outcome}]").check()
    form.locator("textarea[name=referral]").fill(referral)
    shot(page, f"08-outcome-{shots or outcome}-filled-in")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    shot(page, f"09-outcome-{shots or outcome}-saved")


def test_writing_an_outcome_changes_the_question(new_context: NewContext, seeded: Seeded,
                                                 live_app: Flask) -> None:
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)

    # Needs follow-up without a referral: the browser holds the form back and says why, in
    # the page's language; nothing is sent, and the choice stays made.
    page.goto(f"/questions/{seeded.question_id}?lang=ru")
    form = page.locator("form#outcome-form")
    form.locator("input[name=outcome][value=follow_up]").check()
    form.locator("textarea[name=referral]").fill("   ")
    form.locator("button[type=submit]").click()
    message = form.locator("textarea[name=referral]").evaluate("t => t.validationMessage")
    assert message == "Напишите, в какую организацию направлен житель."
    expect(form.locator("input[name=outcome][value=follow_up]")).to_be_checked()
    assert question_state(live_app, seeded.question_id)[:2] == (QUESTION_CLAIMED,
                                                                seeded.consultant)
    shot(page, "08-outcome-follow_up-without-referral")
    # Another outcome needs none.
    form.locator("input[name=outcome][value=resolved]").check()
    assert form.locator("textarea[name=referral]").evaluate("t => t.validity.valid")

    # Needs follow-up: the referral is kept and the question goes back to the queue.
    page.goto(f"/questions/{seeded.question_id}?lang=en")
    referral = "ЦОН Туркестан, отдел пенсий, +7 725 333 44 55"
    send_outcome(page, "follow_up", referral)
    assert question_state(live_app, seeded.question_id) == (QUESTION_WAITING, None, None)
    assert referral_of(live_app, seeded.question_id) == referral

    # Resolved closes it.
    claim(page, seeded.question_id)
    send_outcome(page, "resolved")
    status, _holder, reason = question_state(live_app, seeded.question_id)
    assert (status, reason) == (QUESTION_CLOSED, "resolved")
    page.goto("/queue?status=open")
    expect(page.locator(f"tr#question-{seeded.question_id}")).to_have_count(0)


def test_one_call_answers_two_questions_of_one_resident(new_context: NewContext,
                                                        seeded: Seeded, live_app: Flask) -> None:
    """The resident also wrote an SMS question: the consultant takes it too from the page, and
    the outcome form of either question offers the other, ticked; one "resolved" closes both."""
    with unit_of_work(runtime(live_app).sessions) as db:
        first = db.get(Question, seeded.question_id)
        assert first is not None
        sms = Question(caller_id=first.caller_id, channel="sms", language="ru",
                       text="Мне не пришла пенсия за ноябрь", status=QUESTION_WAITING,
                       created_at=first.created_at)
        db.add(sms)
        db.flush()
        second = sms.id
    page = log_in(new_context(viewport=PHONE, is_mobile=True, has_touch=True),
                  seeded.consultant)
    claim(page, seeded.question_id)
    expect(page.locator("#also-waiting")).to_be_visible()
    with page.expect_navigation():
        page.locator(f"tr#other-{second} button[type=submit]").click()
    assert question_state(live_app, second)[:2] == (QUESTION_CLAIMED, seeded.consultant)
    also = page.locator(f"#outcome-also input[name=also][value='{seeded.question_id}']")
    expect(also).to_be_checked()
    send_outcome(page, "resolved", shots="two-questions-phone")
    for question_id in (seeded.question_id, second):
        status, _holder, reason = question_state(live_app, question_id)
        assert (status, reason) == (QUESTION_CLOSED, "resolved")
    expect(page.locator("p.notice").last).to_contain_text(str(seeded.question_id))


# The most common Android phone's width in CSS pixels, narrower than PHONE.
NARROW_PHONE = {"width": 360, "height": 780}
LONG_LINK = ("https://egov.kz/cms/ru/services/social_support/pass_pensionnoe_obespechenie_"
             "vozrast_i_vyslugu_let_poryadok_podachi_zayavleniya")


def test_long_links_wrap_and_the_number_stays_on_one_line_on_a_phone(
        new_context: NewContext, seeded: Seeded, live_app: Flask) -> None:
    """A link pasted into what the resident wrote, a note and a referral wraps inside its box
    on a 360 px screen instead of widening the page; the resident's number, read off the screen
    to dial from the lawyer's own phone, is never split over two lines."""
    with unit_of_work(runtime(live_app).sessions) as db:
        first = db.get(Question, seeded.question_id)
        assert first is not None
        author = db.scalars(select(User.id).where(User.email == seeded.consultant)).one()
        sms = Question(caller_id=first.caller_id, channel="sms", language="ru",
                       text=f"Мне сказали смотреть {LONG_LINK}", status=QUESTION_WAITING,
                       referral=f"ЦОН, запись: {LONG_LINK}", created_at=first.created_at)
        db.add(sms)
        db.flush()
        db.add(Note(question_id=sms.id, author_id=author, body=f"Ссылка: {LONG_LINK}"))
        question_id = sms.id
    page = log_in(new_context(viewport=NARROW_PHONE, is_mobile=True, has_touch=True),
                  seeded.consultant)
    page.goto(f"/questions/{question_id}")
    for selector in (".resident-text", ".note-body", ".referral"):
        expect(page.locator(selector)).to_contain_text(LONG_LINK)
    shot(page, "question-long-links-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW_PHONE["width"]
    lines = page.locator(".facts .phone").evaluate("span => span.getClientRects().length")
    assert lines == 1


def test_the_queue_and_the_users_list_fit_a_narrow_phone_in_every_language(
        new_context: NewContext, seeded: Seeded, live_app: Flask) -> None:
    """On a 360 px screen the queue's longest badge ("... talked with them ...; no outcome
    written", whose end is the part that matters), what an SMS asked with a link in it, a
    referral's badge and a long email address in the users list wrap inside the page rather
    than widen it, in Kazakh (the longest words), Russian and English."""
    with unit_of_work(runtime(live_app).sessions) as db:
        first = db.get(Question, seeded.question_id)
        assert first is not None
        lawyer = db.scalars(select(User.id).where(User.email == seeded.consultant)).one()
        db.add(CallbackAttempt(question_id=first.id, consultant_id=lawyer,
                               state=CALLBACK_ENDED, duration=95))
        db.add(Question(caller_id=first.caller_id, channel="sms", language="ru",
                        text=f"Мне сказали смотреть {LONG_LINK}", status=QUESTION_WAITING,
                        referral=f"ЦОН:{LONG_LINK}", created_at=first.created_at))
        db.add(User(email="zhanargul.baimukhamedova.volunteer@example-legal-aid.kz",
                    name="Zhanargul", role="consultant", password_hash="-"))
    queue = log_in(new_context(viewport=NARROW_PHONE, is_mobile=True, has_touch=True),
                   seeded.second_consultant)
    users = log_in(new_context(viewport=NARROW_PHONE, is_mobile=True, has_touch=True),
                   seeded.coordinator)
    for language in ("kk", "ru", "en"):
        queue.goto(f"/queue?lang={language}")
        expect(queue.locator(".badge.talked")).to_contain_text("Aigerim Nurlanovna")
        expect(queue.locator(".badge.follow-up")).to_have_count(1)
        shot(queue, f"queue-narrow-phone-{language}")
        assert queue.evaluate("document.documentElement.scrollWidth") <= NARROW_PHONE["width"]
        users.goto(f"/admin/users?lang={language}")
        expect(users.locator("table.users")).to_contain_text("zhanargul.baimukhamedova")
        assert users.evaluate("document.documentElement.scrollWidth") <= NARROW_PHONE["width"]


def test_the_call_and_sms_buttons_work_once_under_the_content_security_policy(
        new_context: NewContext, seeded: Seeded) -> None:
    """The page runs no code of its own (Content-Security-Policy: new_context fails the test
    on a refusal); static/workspace.js disables the Call, Send, outcome and "Take the next
    question" buttons once pressed, so a double click sends one request (a second outcome
    would be refused over the first one's success; a second "Take the next" is answered
    with the first one's question by the server, storage.claims.claim_next_once, but costs a
    request). The sending is stopped here to see the button."""
    page = log_in(new_context(), seeded.consultant)
    response = page.goto("/queue")
    assert response is not None
    assert "script-src 'self'" in (response.headers["content-security-policy"])

    def sent_once(form: str) -> None:
        page.locator(form).evaluate(
            "form => form.addEventListener('submit', event => event.preventDefault())")
        button = page.locator(f"{form} button[type=submit]")
        expect(button).to_be_enabled()
        button.click()
        expect(button).to_be_disabled()

    sent_once("form.take-next")
    claim(page, seeded.question_id)
    for form in ("#call-form", "#sms-form", "#outcome-form"):
        if form == "#sms-form":
            page.fill("#sms-body", "Обратитесь в ЦОН")
        if form == "#outcome-form":
            page.check("#outcome-form input[name=outcome][value=resolved]")
        sent_once(form)


def test_a_note_saved_with_htmx_keeps_the_keyboard_where_it_was(new_context: NewContext,
                                                                seeded: Seeded) -> None:
    """htmx replaces the notes part: the focus stays on its button (htmx keeps it on an element
    with an id), not thrown back to the top of the page for a keyboard or screen reader user."""
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)
    page.fill("#note-body", "Перезвонить после обеда")
    page.focus("#note-save")
    page.keyboard.press("Enter")
    expect(page.locator("#notes .note-body")).to_have_text("Перезвонить после обеда")
    expect(page.locator("#notes p.notice")).to_have_text("Saved.")
    assert page.evaluate("document.activeElement.id") == "note-save"
    # And a screen reader is told: the page's lasting live region says it.
    expect(page.locator("#announcer")).to_have_text("Saved.")
    expect(page.locator("#announcer")).to_have_attribute("role", "status")


def test_the_urgent_badge_follows_the_tags_saved_with_htmx(new_context: NewContext,
                                                           seeded: Seeded) -> None:
    """htmx replaces the tags part; the Urgent badge under the title, outside it, changes with
    it: a lawyer who unticks Urgent no longer sees the question flagged."""
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)
    badge = page.locator("#urgent-badge .badge.urgent")
    expect(badge).to_have_count(0)
    for urgent, shown in ((True, 1), (False, 0)):
        page.locator("#tags input[name=urgent]").set_checked(urgent)
        page.click("#tags-save")
        expect(page.locator("#tags p.notice")).to_have_text("Saved.")
        expect(badge).to_have_count(shown)
        expect(page.locator("#urgent-badge")).to_have_count(1)  # one, not a second beside it
    # Enter on the checkbox sends the form too: the focus stays on it (htmx keeps it on an
    # element with an id), not on the page's body.
    page.focus("#tags input[name=urgent]")
    page.keyboard.press("Enter")
    expect(badge).to_have_count(0)
    expect(page.locator("#tags p.notice")).to_have_text("Saved.")
    expect(page.locator("#tags input[name=urgent]")).to_be_focused()


def test_a_note_sent_with_htmx_that_is_refused_says_why(new_context: NewContext,
                                                        seeded: Seeded, live_app: Flask) -> None:
    """The note form is sent with htmx, which by default drops an error page without a word:
    the consultant whose claim went to a colleague meanwhile sees why their note was not
    kept, and has its text to copy."""
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)
    expect(page.locator("#notes")).to_contain_text("No notes yet.")
    with unit_of_work(runtime(live_app).sessions) as db:  # the claim lapsed and Bolat took it
        question = db.get(Question, seeded.question_id)
        bolat = db.scalars(select(User).where(User.email == seeded.second_consultant)).one()
        assert question is not None
        question.claimed_by_id = bolat.id
    page.fill("#note-body", "Перезвонить после обеда")
    page.click("#notes button[type=submit]")
    expect(page.locator("main h1")).to_have_text("Not changed")
    expect(page.locator("main")).to_contain_text("is being handled by Bolat Serikuly")
    expect(page.locator("main textarea[readonly]")).to_have_value("Перезвонить после обеда")
    expect(page.locator("main a", has_text="Back")).to_be_visible()
    # The button pressed is gone: the keyboard is on the content, not thrown to the page's
    # top, and a screen reader is told why nothing was kept.
    expect(page.locator("main#content")).to_be_focused()
    expect(page.locator("#announcer")).to_have_text(
        re.compile(r"^Not changed\. .*is being handled by Bolat Serikuly"))
    shot(page, "09-htmx-note-refused")
    with unit_of_work(runtime(live_app).sessions) as db:
        assert db.scalars(select(Note)).all() == []


def test_switching_the_language_keeps_a_filter_chosen_with_htmx(new_context: NewContext,
                                                                seeded: Seeded) -> None:
    """A filter applies with htmx (the queue part and the address change); the header's
    language links change with them, so switching the language keeps the filter."""
    page = log_in(new_context(), seeded.consultant)
    page.select_option("form.filters select[name=language]", "ru")
    page.wait_for_url(re.compile(r"[?&]language=ru"))
    with page.expect_navigation():
        page.click("nav.languages a[hreflang=kk]")
    query = urlsplit(page.url).query
    assert "language=ru" in query and "lang=kk" in query, query
    expect(page.locator("form.filters select[name=language]")).to_have_value("ru")
    expect(page.locator(f"tr#question-{seeded.question_id}")).to_have_count(1)
    expect(page.locator("html")).to_have_attribute("lang", "kk")
    expect(page.locator("nav.languages a")).to_have_count(2)  # one switcher, not a second inside


def test_a_filter_chosen_after_the_session_ended_leads_to_the_login_and_back(
        new_context: NewContext, seeded: Seeded) -> None:
    """The queue's filters apply with htmx: when the session has ended meanwhile (idle
    time, a new password elsewhere), choosing one takes the whole page to the login form,
    not a login form inside the table, and logging in brings the consultant back."""
    context = new_context()
    page = log_in(context, seeded.consultant)
    expect(page.locator(f"tr#question-{seeded.question_id}")).to_be_visible()
    context.clear_cookies()  # the session is over
    page.select_option("form.filters select[name=language]", "ru")
    page.wait_for_url(re.compile(r"/login"))
    # The whole page is the login form: no queue table left with a form inside it.
    assert urlsplit(page.url).path == "/login"
    assert page.locator("#queue").count() == 0
    assert page.locator("input[name=password]").count() == 1
    shot(page, "09b-session-ended-login")
    page.fill("input[name=email]", seeded.consultant)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/queue(\?|$)"))
    assert urlsplit(page.url).path == "/queue"
    assert page.locator(f"tr#question-{seeded.question_id}").count() == 1


# -- roles --------------------------------------------------------------------------------------

def _open(context: BrowserContext, page: Page, path: str) -> int:
    response = page.goto(path)
    assert response is not None
    return response.status


def test_a_consultant_cannot_reach_coordinator_pages(new_context: NewContext,
                                                     seeded: Seeded) -> None:
    consultant = new_context()
    page = log_in(consultant, seeded.consultant)
    expect(page.locator("nav.pages a", has_text="Users")).to_have_count(0)
    for path, name in (("/admin/users", "users"), ("/admin/audit", "audit")):
        assert _open(consultant, page, path) == 403, path
        expect(page.locator("h1")).to_have_text("No access")
        shot(page, f"10-consultant-no-access-{name}")

    coordinator = new_context()
    page = log_in(coordinator, seeded.coordinator)
    for path, name in (("/admin/users", "users"), ("/admin/audit", "audit")):
        assert _open(coordinator, page, path) == 200, path
        expect(page.locator("h1")).not_to_have_text("No access")
        shot(page, f"11-coordinator-{name}")
    page.goto("/admin/users")
    expect(page.locator("main")).to_contain_text(seeded.second_consultant)


def test_a_consultant_sets_their_phone_and_logs_out_elsewhere(new_context: NewContext,
                                                              seeded: Seeded) -> None:
    """/account from the name in the header: a new phone takes the current password; "Log out
    everywhere else" ends the other browser's session and keeps this one (phone-sized)."""
    elsewhere = log_in(new_context(), seeded.second_consultant)
    page = log_in(new_context(viewport=PHONE, is_mobile=True, has_touch=True),
                  seeded.second_consultant)
    page.locator("header a[href='/account']").click()
    expect(page.locator("h1")).to_have_text("My account")
    page.fill("#phone", "+7 701 555 01 09")
    page.fill("#phone-current", "not my password")
    page.click("text=Save the phone number")
    expect(page.locator("p.error")).to_have_text("The current password is wrong.")
    expect(page.locator("#phone")).to_have_value("+7 701 555 01 09")  # kept to send again
    page.fill("#phone-current", PASSWORD)
    page.click("text=Save the phone number")
    expect(page.locator("main")).to_contain_text("Your phone number is saved.")
    expect(page.locator("#phone")).to_have_value("+77015550109")
    page.click("text=Log out everywhere else")
    expect(page.locator("main")).to_contain_text("You are logged out everywhere else.")
    shot(page, "40-account-phone-size")
    elsewhere.goto("/queue")
    assert urlsplit(elsewhere.url).path == "/login"
    page.goto("/queue")
    assert urlsplit(page.url).path == "/queue"


def test_the_keyboard_reaches_the_content_and_keeps_its_place(new_context: NewContext,
                                                              seeded: Seeded) -> None:
    """For consultants who use the keyboard or a screen reader: the first Tab offers to skip
    to the content; a queue filter changed with the arrow keys reloads the queue and leaves the
    focus on the filter; the focus ring is dark (the orange one was 2:1 on white); a Claim
    button says which question it takes."""
    page = log_in(new_context(), seeded.consultant)
    page.goto("/queue?lang=ru")
    page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_have_text("Перейти к содержанию")
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()

    language = page.locator("#filter-language")
    language.focus()
    with page.expect_response(lambda r: "/queue?" in r.url and "language=" in r.url):
        page.keyboard.press("ArrowDown")
    expect(page.locator("#queue")).to_be_visible()
    page.wait_for_function("() => document.activeElement && "
                           "document.activeElement.id === 'filter-language'")
    assert "language=" in page.url

    page.goto("/queue?lang=ru")
    button = claim_button(page, seeded.question_id)
    expect(button).to_have_attribute("aria-label", f"Взять вопрос {seeded.question_id}")
    button.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # focused by the keyboard: :focus-visible
    assert button.evaluate("b => getComputedStyle(b).outlineColor") == "rgb(26, 26, 26)"
    # On the dark blue header bar the ring is white (the dark one was 2.0:1 there).
    page.locator(".bar a[lang=kk]").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    expect(page.locator(".bar a[lang=kk]")).to_be_focused()
    assert page.locator(".bar a[lang=kk]").evaluate(
        "a => getComputedStyle(a).outlineColor") == "rgb(255, 255, 255)"


def test_a_polled_sms_status_is_said_only_when_it_changes(new_context: NewContext,
                                                          seeded: Seeded,
                                                          live_app: Flask) -> None:
    """The SMS list is polled every 5 s and replaced whole: a screen reader hears its delivery
    status once, when it changes, through the page's lasting live region."""
    with unit_of_work(runtime(live_app).sessions) as db:
        question = db.get(Question, seeded.question_id)
        assert question is not None and question.caller is not None
        message = SmsMessage(direction=SMS_OUT, caller_id=question.caller_id,
                             phone=question.caller.phone, body="Юрист перезвонит завтра.",
                             question_id=question.id, status="sent", created_at=utcnow())
        db.add(message)
        db.flush()
        message_id = message.id
    page = log_in(new_context(), seeded.consultant)
    page.goto(f"/questions/{seeded.question_id}?lang=ru")
    expect(page.locator(f"#sms-{message_id} .sms-status")).to_be_visible()
    assert page.locator("#sms-thread").get_attribute("aria-live") is None
    page.wait_for_timeout(5500)  # one poll with nothing changed: nothing said
    assert page.locator("#announcer").inner_text() == ""
    with unit_of_work(runtime(live_app).sessions) as db:
        stored = db.get(SmsMessage, message_id)
        assert stored is not None
        stored.status = "delivered"
    expect(page.locator("#announcer")).to_have_text("SMS: доставлено", timeout=12_000)


def test_closing_without_a_conversation_asks_first(new_context: NewContext, seeded: Seeded,
                                                   live_app: Flask) -> None:
    """A quick close cannot be undone (the resident is not called back): the browser asks,
    naming the question and the reason; declined, nothing is sent and the button still works;
    accepted, the question is closed."""
    page = log_in(new_context(), seeded.consultant)
    claim(page, seeded.question_id)
    page.locator("#close summary").click()
    button = page.locator("#close form button", has_text="Test call")
    asked: list[str] = []

    def decline(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    button.click()
    page.wait_for_timeout(300)  # a submit, had there been one, would have begun
    assert asked == [f"Close question {seeded.question_id} as “Test call”? It leaves the "
                     "queue, and nobody will call the resident back."]
    assert question_state(live_app, seeded.question_id)[0] == QUESTION_CLAIMED
    expect(button).to_be_enabled()
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        button.click()
    assert question_state(live_app, seeded.question_id)[::2] == (QUESTION_CLOSED, "test_call")


def test_leaving_with_an_unsaved_note_asks_first(new_context: NewContext, seeded: Seeded,
                                                live_app: Flask) -> None:
    """A note typed and not saved is not lost to another form's button or a language link:
    the browser asks "Leave the page?" (beforeunload); staying keeps the note and the page's
    buttons (the outcome's, disabled once pressed, works again). The form being sent does
    not count its own text, and a note saved with htmx is no longer unsaved."""
    page = log_in(new_context(viewport=PHONE, is_mobile=True, has_touch=True),
                  seeded.consultant)
    claim(page, seeded.question_id)
    asked: list[str] = []

    def stay(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", stay)
    page.fill("#note-body", "Перезвонить после обеда")
    release = page.locator("form[action$='/release'] button[type=submit]")
    release.click(no_wait_after=True)
    page.wait_for_timeout(300)
    assert asked == ["beforeunload"]
    assert question_state(live_app, seeded.question_id)[:2] == (QUESTION_CLAIMED,
                                                                seeded.consultant)
    expect(page.locator("#note-body")).to_have_value("Перезвонить после обеда")

    page.locator("nav.languages a[hreflang=ru]").click(no_wait_after=True)
    page.wait_for_timeout(300)
    assert asked == ["beforeunload"] * 2
    assert urlsplit(page.url).query == ""  # still the English page

    outcome = page.locator("#outcome-form button[type=submit]")
    page.check("#outcome-form input[name=outcome][value=resolved]")
    outcome.click(no_wait_after=True)
    page.wait_for_timeout(300)
    assert asked == ["beforeunload"] * 3
    expect(outcome).to_be_enabled()  # data-once disabled it; staying, it works again
    assert question_state(live_app, seeded.question_id)[0] == QUESTION_CLAIMED

    page.click("#note-save")
    expect(page.locator("#notes .note-body")).to_have_text("Перезвонить после обеда")
    expect(page.locator("#note-body")).to_have_value("")
    # Text typed into the outcome form itself goes with it: no question.
    page.fill("#outcome-form textarea[name=referral]", "ЦОН, окно 5")
    page.check("#outcome-form input[name=outcome][value=follow_up]")
    with page.expect_navigation():
        outcome.click()
    assert asked == ["beforeunload"] * 3
    assert question_state(live_app, seeded.question_id) == (QUESTION_WAITING, None, None)

    # Saved with htmx, a correction no longer holds the page; a typed one does until saved.
    claim(page, seeded.question_id)
    page.fill("#corrected_text", "Когда мне назначат пенсию?")
    page.click("#transcript-save")
    expect(page.locator("#transcript p.notice")).to_have_text("Saved.")
    page.fill("#village", "Шиели")
    page.click("#tags-save")
    expect(page.locator("#tags p.notice")).to_have_text("Saved.")
    with page.expect_navigation():
        release.click()
    assert asked == ["beforeunload"] * 3
    assert question_state(live_app, seeded.question_id)[0] == QUESTION_WAITING
