"""The workspace's accounts: `hotline users`, login, CSRF, expiry, the login limit, roles."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from flask import Flask
from itsdangerous import TimestampSigner
from sqlalchemy import func, select
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, NotFound

import storage.users
from hotline.config import Settings
from hotline.i18n import TRANSLATIONS_DIR, po_files
from storage.models import CHANNEL_VOICE, LoginAttempt, Question, User
from storage.users import (
    FAILURE_WINDOW,
    LOCKOUT,
    MAX_FAILURES,
    MAX_FAILURES_PER_ADDRESS,
    attempt_login,
    set_password,
)
from tests.support import BASE_URL
from tests.workspace_support import PASSWORD, Browser, Db, add_user, page, users_cli


def failures(db: Db) -> int:
    """Failed login attempts stored."""
    with db() as session:
        return session.scalar(select(func.count()).select_from(LoginAttempt)) or 0


# -- the command line -------------------------------------------------------------------------

def test_users_add_stores_an_argon2_hash_never_the_password(
        app: Flask, db: Db, production_hashing: PasswordHasher) -> None:
    result = users_cli(app, ["add", " Lawyer@Example.KZ ", "--role", "consultant", "--name",
                             "Aigerim", "--phone", "8 701 123 45 67"],
                       input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    with db() as session:
        user = session.scalars(select(User)).one()
        assert (user.email, user.role, user.name, user.phone, user.active) == (
            "lawyer@example.kz", "consultant", "Aigerim", "+77011234567", True)
        # Argon2id at argon2-cffi's default cost (the other tests hash cheaply: conftest.py).
        assert user.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
        assert production_hashing.verify(user.password_hash, PASSWORD)
        assert user.last_login_at is None

    listed = users_cli(app, ["list"])
    assert "lawyer@example.kz" in listed.output and "consultant" in listed.output


def test_users_add_refuses_a_duplicate_a_short_password_and_a_mistyped_one(
        app: Flask, db: Db, consultant: str) -> None:
    again = users_cli(app, ["add", "LAWYER@example.kz", "--role", "coordinator", "--name", "X"],
                      input=f"{PASSWORD}\n{PASSWORD}\n")
    assert again.exit_code == 1
    assert "exists already" in again.output
    short = users_cli(app, ["add", "b@example.kz", "--role", "consultant", "--name", "B"],
                      input="short\nshort\n")
    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    # A mistyped confirmation asks again; the input ends there, so nothing is created.
    mistyped = users_cli(app, ["add", "c@example.kz", "--role", "consultant", "--name", "C"],
                         input=f"{PASSWORD}\n{PASSWORD}x\n")
    assert mistyped.exit_code == 1
    assert "do not match" in mistyped.output
    with db() as session:
        assert session.scalars(select(User.email)).all() == [consultant]


@pytest.mark.parametrize(("args", "said"), [
    (["bad", "--name", "B"], "not an email address: 'bad'"),
    (["Lawyer@Example.KZ", "--name", "B"], "a user with the email lawyer@example.kz exists"),
    (["b@example.kz", "--name", "B", "--phone", "12345"], "not a phone number: '12345'"),
    (["b@example.kz", "--name", "  "], "a name is needed"),
])
def test_users_add_refuses_bad_input_before_asking_for_the_password(
        app: Flask, db: Db, consultant: str, args: list[str], said: str) -> None:
    """The operator is not made to type a password twice only to start over."""
    result = users_cli(app, ["add", *args, "--role", "consultant"])  # no input to give
    assert result.exit_code == 1
    assert f"Error: {said}" in result.output
    assert "Password" not in result.output and "Aborted" not in result.output
    with db() as session:
        assert session.scalars(select(User.email)).all() == [consultant]


# -- logging in and out -----------------------------------------------------------------------

def test_login_opens_the_queue_with_a_safe_session_cookie(app: Flask, db: Db,
                                                          consultant: str) -> None:
    browser = Browser(app)
    response = browser.login("  LAWYER@example.kz ")
    assert response.status_code == 302
    assert response.headers["Location"] == "/queue"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("session=")
    for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Expires="):
        assert flag in cookie
    queue = browser.get("/queue")
    assert queue.status_code == 200
    assert queue.headers["Cache-Control"] == "no-store"
    assert page(queue).headings == ["Waiting questions"]
    with db() as session:
        assert session.scalars(select(User.last_login_at)).one() is not None


def test_demo_mode_cookie_works_on_plain_http(make_app: Callable[[Settings], Flask],
                                              settings: Settings) -> None:
    demo = make_app(settings.override(demo=True))
    assert demo.config["SESSION_COOKIE_SECURE"] is False
    assert make_app(settings).config["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize(("language", "said"), [
    ("en", "This page was opened over http."),
    ("kk", "Бұл бет http арқылы ашылды."),
    ("ru", "Эта страница открыта по http."),
])
def test_the_login_page_opened_over_http_says_https_is_needed(
        make_app: Callable[[Settings], Flask], settings: Settings, language: str,
        said: str) -> None:
    """Outside demo mode the session cookie goes only over https: over http no login could
    work, and the form would answer "open too long or came from elsewhere". It says why."""
    def notice(application: Flask, base_url: str) -> list[str]:
        shown = page(application.test_client().get(
            "/login", base_url=base_url, headers={"Accept-Language": language}))
        return [e for e in shown.errors if "http" in e]

    shown = notice(make_app(settings), "http://hotline.example.kz")
    assert len(shown) == 1 and shown[0].startswith(said)
    assert notice(make_app(settings), "https://hotline.example.kz") == []
    assert notice(make_app(settings.override(demo=True)), "http://127.0.0.1:5000") == []
    # The login form sent over http gets the reason first, above the form's own error.
    client = make_app(settings).test_client()
    sent = page(client.post("/login", base_url="http://hotline.example.kz",
                            headers={"Accept-Language": language},
                            data={"email": "lawyer@example.kz", "password": "x"}))
    assert len(sent.errors) == 2 and sent.errors[0].startswith(said)
    # Behind a TLS proxy the settings do not declare, the browser is on https: no banner.
    proxied = page(make_app(settings).test_client().get(
        "/login", base_url="http://10.0.0.5:5000",
        headers={"Accept-Language": language, "X-Forwarded-Proto": "https"}))
    assert [e for e in proxied.errors if "http" in e] == []


def test_wrong_password_and_unknown_email_get_the_same_answer(app: Flask, db: Db,
                                                              consultant: str) -> None:
    browser = Browser(app)
    wrong = browser.login(consultant, "not the password")
    unknown = browser.login("nobody@example.kz")
    for response in (wrong, unknown):
        assert response.status_code == 200
        assert page(response).errors == ["Wrong email or password."]
    assert browser.get("/queue").status_code == 302
    assert failures(db) == 2


def test_a_password_typed_as_the_email_is_not_logged(app: Flask, consultant: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Failed logins are logged with the email typed, for an operator looking at an attack;
    a password typed into the email field (the fields swapped) only by its length."""
    caplog.set_level(logging.INFO, logger="hotline")
    browser = Browser(app)
    browser.login(consultant, "not the password")
    browser.login(PASSWORD, PASSWORD)  # the fields swapped
    browser.login("Nobody@Example.KZ", "guess one")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "hotline.auth")
    assert f"login failed: {consultant!r} from 203.0.113.7" in logged
    assert "login failed: 'Nobody@Example.KZ' from" in logged
    assert f"login failed: <not an email address, {len(PASSWORD)} characters>" in logged
    assert PASSWORD not in logged and "guess one" not in logged


def test_an_empty_form_is_refused_without_counting_a_failure(app: Flask, db: Db) -> None:
    browser = Browser(app)
    response = browser.post("/login", {"csrf_token": browser.token(), "email": "",
                                       "password": ""})
    assert response.status_code == 400
    assert page(response).errors == ["Please enter your email.", "Please enter your password."]
    assert failures(db) == 0
    # Each field says it is in error and which message describes it; the first takes focus.
    html = response.get_data(as_text=True)
    for field in ("email", "password"):
        assert f'aria-describedby="{field}-error"' in html and f'id="{field}-error"' in html
    assert html.count('aria-invalid="true"') == 2 and html.count("autofocus") == 1
    only_password = browser.post("/login", {"csrf_token": browser.token(),
                                            "email": "lawyer@example.kz", "password": ""})
    html = only_password.get_data(as_text=True)
    assert html.count('aria-invalid="true"') == 1
    [password_input] = re.findall(r'<input[^>]*name="password"[^>]*>', html)
    assert "autofocus" in password_input and 'aria-invalid="true"' in password_input


def test_a_deactivated_user_cannot_log_in(app: Flask, db: Db, consultant: str) -> None:
    with db() as session:
        session.scalars(select(User)).one().active = False
    response = Browser(app).login(consultant)
    assert page(response).errors == ["Wrong email or password."]


def test_logout_ends_the_session(app: Flask, consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    response = browser.logout()
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert browser.get("/queue").status_code == 302


def test_forms_without_a_csrf_token_are_refused(app: Flask, db: Db, consultant: str) -> None:
    browser = Browser(app)
    response = browser.post("/login", {"email": consultant, "password": PASSWORD})
    assert response.status_code == 400
    assert "csrf_token" in page(response).inputs  # the form again, with a fresh token
    assert browser.get("/queue").status_code == 302
    browser.login(consultant)
    forged = browser.post("/logout", {"csrf_token": "forged"})
    assert forged.status_code == 400
    assert browser.get("/queue").status_code == 200  # still logged in
    assert failures(db) == 0


def test_a_changed_password_ends_open_sessions(app: Flask, db: Db, consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    with db() as session:
        set_password(session, session.scalars(select(User)).one(), "a new password!")
    assert browser.get("/queue").status_code == 302


def test_a_login_that_rehashes_the_password_keeps_the_other_sessions(
        app: Flask, db: Db, consultant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new hashing cost (an upgrade of argon2-cffi, a setting) rehashes the password at the
    next login; the same password on another device is no reason to log that one out."""
    phone = Browser(app, ip="192.0.2.21")
    phone.login(consultant)
    with db() as session:
        before = session.scalars(select(User)).one().password_hash
    costlier = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    monkeypatch.setattr(storage.users, "hasher", costlier)
    laptop = Browser(app, ip="192.0.2.22")
    assert laptop.login(consultant).status_code == 302
    with db() as session:
        after = session.scalars(select(User)).one().password_hash
    assert after != before and not costlier.check_needs_rehash(after)
    assert phone.get("/queue").status_code == 200
    assert laptop.get("/queue").status_code == 200


# -- the limit on failed logins ---------------------------------------------------------------

def test_five_failures_lock_the_email_even_for_the_right_password(app: Flask, db: Db,
                                                                  consultant: str) -> None:
    browser = Browser(app)
    for _ in range(5):
        assert browser.login(consultant, "guess").status_code in (200, 429)
    locked = browser.login(consultant)
    assert locked.status_code == 429
    assert 14 * 60 <= int(locked.headers["Retry-After"]) <= 15 * 60
    [message] = page(locked).errors
    assert message.startswith("Too many failed attempts.")
    assert browser.get("/queue").status_code == 302
    # The lock is per email: another consultant from elsewhere still gets in.
    add_user(app, "other@example.kz")
    assert Browser(app, ip="198.51.100.9").login("other@example.kz").status_code == 302


def test_twenty_failures_from_one_address_lock_that_address(app: Flask, db: Db,
                                                            consultant: str) -> None:
    assert MAX_FAILURES_PER_ADDRESS == 20
    guesser = Browser(app, ip="192.0.2.66")
    for n in range(19):
        assert guesser.login(f"guess{n}@example.kz").status_code == 200
    with db() as session:  # 19 failures: the address may still log in
        assert attempt_login(session, consultant, PASSWORD, "192.0.2.66").user is not None
    assert guesser.login("guess-last@example.kz").status_code == 429  # the 20th locks it
    assert guesser.login(consultant).status_code == 429
    assert Browser(app, ip="192.0.2.67").login(consultant).status_code == 302


def test_one_colleague_mistyping_does_not_lock_out_the_office(app: Flask,
                                                              consultant: str) -> None:
    """Volunteers behind one address (an office, a mobile operator's shared address): one of
    them locked out by her own mistakes, the others log in from the same address."""
    office = "203.0.113.50"
    add_user(app, "forgetful@example.kz")
    forgetful = Browser(app, ip=office)
    for _ in range(MAX_FAILURES):
        forgetful.login("forgetful@example.kz", "not my password")
    assert forgetful.login("forgetful@example.kz").status_code == 429
    assert Browser(app, ip=office).login(consultant).status_code == 302


def test_the_limit_holds_across_app_instances_on_one_database(
        make_app: Callable[[Settings], Flask], settings: Settings, app: Flask,
        consultant: str) -> None:
    second = make_app(settings)  # another gunicorn worker
    one, two = Browser(app), Browser(second)
    for browser in (one, two, one, two, one):
        browser.login(consultant, "guess")
    assert two.login(consultant).status_code == 429
    assert one.login(consultant).status_code == 429


def test_the_lock_lasts_fifteen_minutes_and_a_success_clears_the_email(
        app: Flask, db: Db, consultant: str) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with db() as session:
        for minute in range(5):
            outcome = attempt_login(session, consultant, "guess", "10.0.0.1",
                                    now=start + timedelta(minutes=minute))
        assert outcome.locked_until == start + timedelta(minutes=4) + LOCKOUT
    with db() as session:
        refused = attempt_login(session, consultant, PASSWORD, "10.0.0.2",
                                now=start + timedelta(minutes=18))
        assert refused.user is None and refused.locked_until is not None
    assert failures(db) == 5  # refusals while locked are not failures: they do not extend it
    with db() as session:
        late = attempt_login(session, consultant, PASSWORD, "10.0.0.2",
                             now=start + timedelta(minutes=19, seconds=1))
        assert late.user is not None
    with db() as session:
        assert session.scalars(select(LoginAttempt.email).distinct()).all() == []


def test_failures_spread_wider_than_the_window_do_not_lock(app: Flask, db: Db,
                                                           consultant: str) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    step = FAILURE_WINDOW / 4 + timedelta(seconds=1)
    with db() as session:
        for n in range(5):
            outcome = attempt_login(session, consultant, "guess", "10.0.0.1",
                                    now=start + n * step)
        assert outcome.locked_until is None


# -- sessions expire --------------------------------------------------------------------------

def test_a_session_expires_after_the_idle_time_but_not_while_in_use(
        app: Flask, consultant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert app.permanent_session_lifetime == timedelta(minutes=60)
    browser = Browser(app)
    clock = [1_900_000_000]
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: clock[0])
    browser.login(consultant)
    for _ in range(3):
        clock[0] += 50 * 60  # every 50 minutes: each request signs the cookie anew
        assert browser.get("/queue").status_code == 200
    clock[0] += 61 * 60
    response = browser.get("/queue")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"


def test_the_idle_time_is_a_setting(make_app: Callable[[Settings], Flask],
                                    settings: Settings) -> None:
    assert Settings.from_env({"HOTLINE_SESSION_MINUTES": "15"}).session_minutes == 15
    short = make_app(settings.override(session_minutes=5))
    assert short.permanent_session_lifetime == timedelta(minutes=5)


# -- roles ------------------------------------------------------------------------------------

WORKSPACE_PAGES = ["/", "/queue", "/account", "/admin/users", "/admin/users/<int:user_id>",
                   "/admin/audit", "/reports",
                   "/questions/<int:question_id>", "/questions/<int:question_id>/audio",
                   "/questions/<int:question_id>/callback-panel"]
WORKSPACE_FORMS = [f"/questions/<int:question_id>/{action}"
                   for action in ("claim", "release", "transcript", "notes", "tags", "close",
                                  "call", "outcome", "sms")] + [
    "/queue/next", "/account/phone", "/account/password", "/account/sessions"]


@pytest.mark.parametrize("path", WORKSPACE_PAGES)
def test_a_logged_out_visitor_is_sent_to_login_and_back(app: Flask, coordinator: str,
                                                        path: str) -> None:
    path = path.replace("<int:question_id>", "1").replace("<int:user_id>", "1")
    browser = Browser(app)
    response = browser.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    after = browser.login(coordinator)
    assert after.headers["Location"] == path


def test_the_queue_s_filters_come_back_after_the_login_unless_too_long_to_keep(
        app: Flask, coordinator: str) -> None:
    """The page to return to waits in the session cookie: a query that would burst the
    cookie's 4 KB is dropped, the page itself kept (it was a server error in the tests)."""
    browser = Browser(app)
    browser.get("/queue", query_string={"status": "closed", "region": "KZ-ALM"})
    assert browser.login(coordinator).headers["Location"] == (
        "/queue?status=closed&region=KZ-ALM")
    browser.logout()
    # Letters that neither repeat nor fit in 16 bits: the cookie's compression cannot help.
    village = "".join(chr(0x20000 + i * 7919 % 40000) for i in range(2000))
    response = browser.get("/queue", query_string={"village": village})
    assert response.status_code == 302
    assert len(response.headers["Set-Cookie"]) < 4000
    assert browser.login(coordinator).headers["Location"] == "/queue"


def test_every_workspace_route_needs_a_login(app: Flask) -> None:
    public = {"static", "health", "health.ready", "auth.login", "auth.logout"}
    browser = Browser(app)
    for rule in app.url_map.iter_rules():
        # Twilio's webhooks (signed: their own tests check the signature), the public figures,
        # and the built-in phone (demo mode only: tests/integration/test_phone_demo.py).
        if rule.endpoint in public or rule.endpoint.split(".")[0] in (
                "voice", "sms", "sms_status", "callback_hooks", "public", "phone_demo"):
            continue
        assert rule.endpoint.startswith("workspace."), rule
        path = rule.rule.replace("<int:question_id>", "1").replace("<int:user_id>", "1")
        assert "<" not in path, f"{rule}: add a logged-out test with these arguments"
        if "GET" in (rule.methods or ()):
            response = browser.get(path)
        else:  # a form: with a valid token, so that the login check (not CSRF) answers
            response = browser.post(path, {"csrf_token": browser.token()})
        assert response.status_code == 302, rule
        assert response.headers["Location"] == "/login"
    assert {r.rule for r in app.url_map.iter_rules()
            if r.endpoint.startswith("workspace.")} == {*WORKSPACE_PAGES, *WORKSPACE_FORMS}


def test_a_consultant_cannot_open_coordinator_pages(app: Flask, consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    response = browser.get("/admin/users")
    assert response.status_code == 403
    assert page(response).headings == ["No access"]
    assert "/admin/users" not in page(browser.get("/queue")).links


def test_a_coordinator_sees_the_users(app: Flask, consultant: str, coordinator: str) -> None:
    browser = Browser(app)
    browser.login(coordinator)
    response = browser.get("/admin/users")
    assert response.status_code == 200
    header, *rows = page(response).rows
    assert header[:3] == ["Name", "Email", "Role"]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("Dana Coordinator", coordinator, "coordinator"),
        ("Aigerim Nurlanovna", consultant, "consultant"),
    ]
    assert "/admin/users" in page(browser.get("/queue")).links


def test_the_queue_lists_waiting_questions_in_almaty_time(app: Flask, db: Db,
                                                          consultant: str) -> None:
    with db() as session:
        session.add(Question(channel=CHANNEL_VOICE, language="ru", topic="pension",
                             created_at=datetime(2026, 3, 2, 4, 30, tzinfo=UTC)))
        session.add(Question(channel=CHANNEL_VOICE, language="kk", topic="pension",
                             status="closed"))
        session.flush()
        waiting_id = session.scalars(select(Question.id).where(
            Question.status == "waiting")).one()
    browser = Browser(app)
    browser.login(consultant)
    english = browser.get("/queue?lang=en")
    header, *rows = page(english).rows
    assert header == ["#", "Waiting", "Priority", "Language", "Topic", "Channel", "Region",
                      "What they asked", "Claimed by", ""]
    days = (datetime.now(UTC) - datetime(2026, 3, 2, 4, 30, tzinfo=UTC)).days
    # No number: no callback was promised, so no "promised by" (test_queue.py).
    assert rows == [[str(waiting_id), f"{days} d", "", "Русский", "Pensions", "Call",
                     "no region", "waiting", "—", "Claim"]]
    # The arrival time, in Almaty's time, is the waiting time's title.
    assert 'title="Received (Almaty): 2026-03-02 09:30"' in english.get_data(as_text=True)
    # Said to a screen reader too: a title is a mouse's tooltip only.
    assert ", Received (Almaty): 2026-03-02 09:30" in page(english).hidden_texts
    _, *russian = page(browser.get("/queue?lang=ru")).rows
    assert russian == [[str(waiting_id), f"{days} дн.", "", "Русский", "Пенсия", "Звонок",
                        "без региона", "ожидает", "—", "Взять"]]


# -- languages --------------------------------------------------------------------------------

@pytest.mark.parametrize(("how", "lang", "button"), [
    ({"query_string": {"lang": "ru"}}, "ru", "Войти"),
    ({"headers": {"Accept-Language": "kk-KZ,kk;q=0.9"}}, "kk", "Кіру"),
    ({"headers": {"Accept-Language": "en-GB,en;q=0.8"}}, "en", "Log in"),
    ({"headers": {"Accept-Language": "de"}}, "kk", "Кіру"),
])
def test_the_login_page_speaks_kazakh_russian_and_english(
        app: Flask, how: dict[str, dict[str, str]], lang: str, button: str) -> None:
    login = page(Browser(app, language=None).get("/login", **how))
    assert login.lang == lang
    assert login.buttons == [button]


def test_the_chosen_language_is_remembered(app: Flask) -> None:
    browser = Browser(app, language=None)
    chosen = browser.get("/login?lang=ru")
    assert "lang=ru" in chosen.headers["Set-Cookie"]
    assert page(browser.get("/login", headers={"Accept-Language": "en"})).lang == "ru"


def test_the_language_links_keep_the_page_and_its_filters(app: Flask, consultant: str,
                                                         db: Db) -> None:
    """Switching the language keeps the queue's filters; on a form's answer (a POST address)
    the link opens the page the form is on, in the language, not a 405 in English."""
    with db() as session:
        question = Question(channel=CHANNEL_VOICE, language="ru")
        session.add(question)
        session.flush()
        question_id = question.id
    browser = Browser(app)
    browser.login(consultant)
    links = page(browser.get("/queue?language=kk&status=all")).links
    assert "/queue?language=kk&status=all&lang=ru" in links
    for form, shown in ((f"/questions/{question_id}/sms", f"/questions/{question_id}"),
                        (f"/questions/{question_id}/outcome", f"/questions/{question_id}"),
                        ("/account/password", "/account")):
        opened = browser.get(f"{form}?lang=kk")
        assert opened.status_code == 303, form
        assert opened.headers["Location"] == f"{shown}?lang=kk"
        assert page(browser.get(opened.headers["Location"])).lang == "kk"
    # A webhook's address is never redirected: Twilio posts, and a GET is refused.
    assert browser.get("/voice/incoming").status_code == 405
    assert browser.get("/sms/incoming").status_code == 405


def test_every_workspace_string_is_translated_to_kazakh_and_russian() -> None:
    hotline = TRANSLATIONS_DIR.parent
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    keywords = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None}
    strings = {message for _file, _line, message, _comments, _context in
               extract_from_dir(str(hotline), method_map, keywords=keywords)}
    assert "Log in" in strings
    for language in ("kk", "ru"):
        translated: set[str] = set()
        for path in po_files(language):
            with path.open("rb") as source:
                translated |= {m.id for m in read_po(source)
                               if m.id and m.string and not m.fuzzy}
        assert strings - translated == set(), language


@pytest.mark.parametrize(("language", "not_found", "unreadable"), [
    ("kk", "Табылмады", "Сұрауды оқу мүмкін болмады"),
    ("ru", "Не найдено", "Не удалось прочитать запрос"),
    ("en", "Not found", "Could not read the request"),
])
def test_missing_and_unreadable_pages_answer_in_the_users_language(
        app: Flask, coordinator: str, language: str, not_found: str, unreadable: str) -> None:
    browser = Browser(app, language=language)
    browser.login(coordinator)
    # No such question (the view's 404), an id that is no number and an address that is no
    # page (the routing's 404, before any view): the same page.
    for path in ("/questions/12345", "/questions/abc", "/no-such-page"):
        missing = browser.get(path)
        assert missing.status_code == 404, path
        assert page(missing).lang == language and not_found in page(missing).headings, path
        assert missing.headers["Cache-Control"] == "no-store", path
    garbage = browser.get("/reports?from=garbage")
    assert garbage.status_code == 400
    assert page(garbage).lang == language and unreadable in page(garbage).headings


@pytest.mark.parametrize(("language", "not_found", "unreadable", "not_allowed", "too_much"), [
    ("kk", "Табылмады", "Сұрауды оқу мүмкін болмады", "Бұлай ашуға болмайды",
     "Тым көп жіберілді"),
    ("ru", "Не найдено", "Не удалось прочитать запрос", "Так открыть нельзя",
     "Отправлено слишком много"),
    ("en", "Not found", "Could not read the request", "Not available this way",
     "Too much was sent"),
])
def test_what_werkzeug_answered_answers_in_the_users_language(
        app: Flask, coordinator: str, language: str, not_found: str, unreadable: str,
        not_allowed: str, too_much: str) -> None:
    """A page asked for with a method it does not take (405, its Allow kept), a form too
    large to read (413), and, logged out, an unknown address and an unreadable login: the
    workspace's message page in the user's language, not Werkzeug's English one."""
    browser = Browser(app, language=language)
    browser.login(coordinator)
    token = browser.token("/queue")
    for answer, allowed in ((browser.get("/logout"), "POST"),
                            (browser.post("/queue", {"csrf_token": token}), "GET")):
        assert answer.status_code == 405
        assert page(answer).lang == language and not_allowed in page(answer).headings
        assert allowed in answer.headers["Allow"].split(", ")
    large = browser.post("/questions/1/notes", {"csrf_token": token, "body": "x" * 70_000})
    assert large.status_code == 413
    assert page(large).lang == language and too_much in page(large).headings
    visitor = Browser(app, language=language)
    unknown = visitor.get("/no-such-page")
    assert unknown.status_code == 404
    assert page(unknown).lang == language and not_found in page(unknown).headings
    # Someone not logged in is given no session for it (the public pages' frame, as for
    # /public/...), nor for the icon a browser asks for beside every page (Werkzeug's 404).
    assert "Set-Cookie" not in unknown.headers
    icon = visitor.get("/favicon.ico")
    assert (icon.status_code, icon.get_data()) == (404, NotFound().get_response().get_data())
    assert "Set-Cookie" not in icon.headers
    assert f'href="/login?lang={language}"' in unknown.get_data(as_text=True)
    nul = visitor.get("/login?email=%00")
    assert nul.status_code == 400
    assert page(nul).lang == language and unreadable in page(nul).headings


@pytest.mark.parametrize(("method", "path", "answer"), [
    # Twilio's webhooks: an unsigned request (403), a GET (405), an address that is none.
    ("POST", "/voice/incoming", Forbidden), ("GET", "/voice/incoming", MethodNotAllowed),
    ("POST", "/voice/no-such-hook", NotFound), ("POST", "/sms/incoming", Forbidden),
    ("POST", "/sms/status", Forbidden), ("POST", "/callbacks/1/answer", Forbidden),
    ("POST", "/callbacks/abc/answer", NotFound),
    # JSON, static files, the demo phone's requests (a 404 outside demo mode).
    ("POST", "/public/stats.json", MethodNotAllowed), ("POST", "/health", MethodNotAllowed),
    ("GET", "/health/no-such-check", NotFound), ("GET", "/static/no-such.css", NotFound),
    ("POST", "/phone/sign", NotFound),
    # What browsers and robots ask for on their own: no page is rendered for it.
    ("GET", "/favicon.ico", NotFound), ("GET", "/robots.txt", NotFound),
])
def test_webhooks_and_json_keep_their_error_answers(
        app: Flask, coordinator: str, method: str, path: str,
        answer: type[HTTPException]) -> None:
    """No browser reads these: even a logged-in Russian browser gets what Werkzeug answers."""
    browser = Browser(app, language="ru")
    browser.login(coordinator)
    response = browser.client.open(path, method=method, base_url=BASE_URL,
                                   headers=browser.headers, data={"CallSid": "CA1"})
    expected = answer().get_response()
    assert response.status_code == expected.status_code
    assert response.get_data() == expected.get_data()


def test_a_consultant_logged_out_meets_a_missing_page_in_the_language_they_chose(
        app: Flask) -> None:
    """A consultant who chose Kazakh on a Russian browser, whose session expired, follows an
    old link: the 404 is in Kazakh (the language cookie, or ?lang=, before the browser's) and
    offers to log in; it is not a dead end."""
    visitor = Browser(app, language="ru-RU,ru;q=0.9")
    assert "lang=kk" in visitor.get("/login?lang=kk").headers["Set-Cookie"]
    for path in ("/questions/abc", "/queue/", "/questions/abc?lang=kk"):
        missing = visitor.get(path)
        assert missing.status_code == 404, path
        assert page(missing).lang == "kk" and page(missing).headings == ["Табылмады"], path
        assert 'href="/login?lang=kk"' in missing.get_data(as_text=True), path
        assert "Cookie" in missing.headers["Vary"]
    english = visitor.get("/no-such-page?lang=en")
    assert page(english).lang == "en" and 'href="/login?lang=en"' in english.get_data(as_text=True)
    # The public pages keep their own rule (the path's language, else the browser's).
    assert page(visitor.get("/public/de")).lang == "ru"
    assert "/login" not in visitor.get("/public/de").get_data(as_text=True)
