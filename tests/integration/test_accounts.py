"""Changing accounts after they exist: `hotline users edit/close/open/password` on the server,
and the users page for coordinators. Closing the account of someone who left ends their
sessions at once and gives the questions they held back to the queue."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import (
    CALLBACK_BRIDGING,
    CHANNEL_VOICE,
    QUESTION_CLAIMED,
    QUESTION_WAITING,
    AuditEvent,
    CallbackAttempt,
    LoginAttempt,
    Question,
    User,
)
from storage.users import MAX_FAILURES, UserError, change_user, find_user
from tests.support import held_meanwhile
from tests.workspace_support import PASSWORD, Browser, Db, page, users_cli

NEW_PASSWORD = "a brand new one 7"


def _user(db: Db, email: str) -> User:
    with db() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        session.expunge(user)
        return user


def _account_events(db: Db) -> list[tuple[int | None, dict[str, object]]]:
    with db() as session:
        return [(e.user_id, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "account").order_by(AuditEvent.id))]


def _held_question(db: Db, holder: int, *, calling: bool = False) -> int:
    now = datetime.now(UTC)
    with db() as session:
        question = Question(channel=CHANNEL_VOICE, language="ru", topic="pension",
                            status=QUESTION_CLAIMED, claimed_by_id=holder, claimed_at=now,
                            claim_touched_at=now)
        session.add(question)
        session.flush()
        if calling:
            session.add(CallbackAttempt(question_id=question.id, consultant_id=holder,
                                        state=CALLBACK_BRIDGING, created_at=now,
                                        updated_at=now))
        return question.id


def _status(db: Db, question_id: int) -> tuple[str, int | None]:
    with db() as session:
        question = session.get(Question, question_id)
        assert question is not None
        return question.status, question.claimed_by_id


# -- the command line -------------------------------------------------------------------------

def test_users_edit_changes_name_phone_and_role_and_audits_it(app: Flask, db: Db,
                                                             consultant: str,
                                                             coordinator: str) -> None:
    result = users_cli(app, ["edit", consultant.upper(), "--name", "Aigerim N.", "--phone",
                             "8 701 123 45 67", "--role", "coordinator"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"{consultant}: name Aigerim N., phone changed, "
                                     "role coordinator")
    user = _user(db, consultant)
    assert (user.name, user.phone, user.role) == ("Aigerim N.", "+77011234567", "coordinator")
    removed = users_cli(app, ["edit", consultant, "--phone", ""])
    assert removed.exit_code == 0, removed.output
    assert _user(db, consultant).phone is None
    again = users_cli(app, ["edit", consultant, "--name", "Aigerim N."])
    assert again.output.strip() == f"{consultant}: nothing to change"
    events = _account_events(db)
    # Two accounts created, then the two changes (the one that changed nothing is not logged);
    # the number itself is never in the log, only that it changed.
    assert [detail for _user_id, detail in events[2:]] == [
        {"account": consultant, "via": "cli", "name": "Aigerim N.", "phone": True,
         "role": "coordinator"},
        {"account": consultant, "via": "cli", "phone": False},
    ]
    assert all(user_id is None for user_id, _detail in events)


def test_users_edit_refuses_bad_input_and_unknown_accounts(app: Flask, db: Db,
                                                           consultant: str) -> None:
    bad_phone = users_cli(app, ["edit", consultant, "--name", "New", "--phone", "12"])
    assert bad_phone.exit_code == 1
    assert "not a phone number" in bad_phone.output
    assert _user(db, consultant).name == "Aigerim Nurlanovna"  # nothing of the command kept
    unknown = users_cli(app, ["close", "nobody@example.kz"])
    assert unknown.exit_code == 1
    assert "no user with the email nobody@example.kz" in unknown.output


def test_closing_an_account_ends_its_session_and_returns_its_questions(
        app: Flask, db: Db, consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    assert browser.get("/queue").status_code == 200
    holder = _user(db, consultant).id
    held = _held_question(db, holder)
    on_the_phone = _held_question(db, holder, calling=True)
    result = users_cli(app, ["close", consultant])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{consultant}: active False, released_claims 1"
    assert browser.get("/queue").status_code == 302  # logged out at the next request
    assert page(Browser(app).login(consultant)).errors == ["Wrong email or password."]
    assert _status(db, held) == (QUESTION_WAITING, None)
    # A call going on is not cut off: that question lapses as any other once the call ends.
    assert _status(db, on_the_phone) == (QUESTION_CLAIMED, holder)
    reopened = users_cli(app, ["open", consultant])
    assert reopened.exit_code == 0, reopened.output
    # Opened again: the session from before stays over; a new login works.
    assert browser.get("/queue").status_code == 302
    assert Browser(app).login(consultant).headers["Location"] == "/queue"


def test_the_last_active_coordinator_stays(app: Flask, db: Db, coordinator: str) -> None:
    for args in (["close", coordinator], ["edit", coordinator, "--role", "consultant"]):
        result = users_cli(app, args)
        assert result.exit_code == 1, args
        assert "only active coordinator" in result.output
    user = _user(db, coordinator)
    assert (user.active, user.role) == (True, "coordinator")
    users_cli(app, ["add", "second@example.kz", "--role", "coordinator", "--name", "Second"],
              input=f"{PASSWORD}\n{PASSWORD}\n")
    assert users_cli(app, ["close", coordinator]).exit_code == 0
    assert _user(db, coordinator).active is False


def test_a_new_password_ends_the_old_sessions(app: Flask, db: Db, consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    short = users_cli(app, ["password", consultant], input="short\nshort\n")
    assert short.exit_code == 1
    assert "at least 10 characters" in short.output
    assert browser.get("/queue").status_code == 200  # nothing changed
    result = users_cli(app, ["password", consultant],
                       input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert NEW_PASSWORD not in result.output
    assert browser.get("/queue").status_code == 302
    assert page(Browser(app).login(consultant)).errors == ["Wrong email or password."]
    assert Browser(app, ip="203.0.113.50").login(
        consultant, NEW_PASSWORD).headers["Location"] == "/queue"
    assert _account_events(db)[-1][1] == {"account": consultant, "password": True,
                                          "via": "cli"}


# -- the users page ---------------------------------------------------------------------------

class Form(HTMLParser):
    """What a browser sends for the page's form: no disabled controls, a checkbox only when
    ticked, a select's chosen option (the hidden inputs of a coordinator's own account)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Collect the successful controls."""
        attributes = {name: value or "" for name, value in attrs}
        if "disabled" in attributes:
            return
        name = attributes.get("name")
        if tag == "input" and name:
            if attributes.get("type") == "checkbox" and "checked" not in attributes:
                return
            self.fields[name] = attributes.get("value", "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attributes:
            self.fields[self._select] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        """Leave a select."""
        if tag == "select":
            self._select = None


def _form(browser: Browser, user_id: int, **fields: str | None) -> dict[str, str]:
    """What the browser sends from the account's page, with some fields changed (None: a box
    unticked)."""
    sent = Form(browser.get(f"/admin/users/{user_id}").get_data(as_text=True)).fields
    for name, value in fields.items():
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    return sent


def test_a_coordinator_changes_a_consultants_phone(app: Flask, db: Db, consultant: str,
                                                   coordinator: str) -> None:
    browser = Browser(app)
    browser.login(coordinator)
    target = _user(db, consultant)
    listing = browser.get("/admin/users")
    assert f"/admin/users/{target.id}" in page(listing).links
    shown = page(browser.get(f"/admin/users/{target.id}"))
    assert shown.headings == ["Aigerim Nurlanovna"]
    assert (shown.inputs["name"], shown.inputs["phone"]) == ("Aigerim Nurlanovna", "")
    response = browser.post(f"/admin/users/{target.id}",
                            _form(browser, target.id, phone="+7 (701) 765-43-21",
                                  current=PASSWORD))
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/users"
    assert "Saved: Aigerim Nurlanovna." in browser.get("/admin/users").get_data(as_text=True)
    assert _user(db, consultant).phone == "+77017654321"
    coordinator_id = _user(db, coordinator).id
    assert _account_events(db)[-1] == (coordinator_id, {"account": consultant, "phone": True})
    audit = page(browser.get("/admin/audit?action=account"))
    assert ["Dana Coordinator", "changed an account", "—",
            f"account: {consultant}; phone number changed"] == audit.rows[1][1:]


def test_a_new_phone_takes_the_coordinator_s_own_password(app: Flask, db: Db, consultant: str,
                                                         coordinator: str) -> None:
    """A coordinator's session alone (left open, stolen) cannot send a consultant's callbacks
    to another phone; a wrong password counts as a failed login. Removing a number, or a
    change that leaves the number as it is, takes the session alone."""
    assert users_cli(app, ["edit", consultant, "--phone", "+77015550101"]).exit_code == 0
    browser = Browser(app)
    browser.login(coordinator)
    target = _user(db, consultant).id
    before = _account_events(db)
    for current, error in (
            ("", 'A new phone number needs your own password: type it under "Your password".'),
            ("a guess", "The current password is wrong.")):
        response = browser.post(f"/admin/users/{target}",
                                _form(browser, target, phone="+77017654321", current=current))
        assert response.status_code == 400
        shown = page(response)
        assert shown.errors == [error]
        assert (shown.inputs["phone"], shown.inputs["current"]) == ("+77017654321", "")
    assert _user(db, consultant).phone == "+77015550101"
    assert _account_events(db) == before
    assert failures_for(db, coordinator) == 1  # the guess; an empty field is no attempt
    # The same number written another way, and a new name: no password.
    assert browser.post(f"/admin/users/{target}", _form(
        browser, target, phone="8 701 555 01 01", name="Aigerim N.")).status_code == 303
    assert (_user(db, consultant).phone, _user(db, consultant).name) == (
        "+77015550101", "Aigerim N.")
    # No number (they cannot call back until they set one): no password either.
    assert browser.post(f"/admin/users/{target}",
                        _form(browser, target, phone="")).status_code == 303
    assert _user(db, consultant).phone is None


def test_guessing_through_the_users_page_is_stopped_as_logins_are(
        app: Flask, db: Db, consultant: str, coordinator: str) -> None:
    """The users page asks for the same password as /account and counts the same failures:
    once they reach the limit, even the right password changes no phone until the pause ends."""
    browser = Browser(app)
    browser.login(coordinator)
    target = _user(db, consultant).id
    for _attempt in range(MAX_FAILURES - 1):
        assert browser.post(f"/admin/users/{target}", _form(
            browser, target, phone="+77017654321", current="guess")).status_code == 400
    assert browser.post(f"/admin/users/{target}", _form(
        browser, target, phone="+77017654321", current="guess")).status_code == 429
    locked = browser.post(f"/admin/users/{target}", _form(
        browser, target, phone="+77017654321", current=PASSWORD))
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    shown = page(locked)
    assert shown.errors[0].startswith("Too many failed attempts. Changes are paused")
    assert shown.inputs["phone"] == "+77017654321"  # what was typed stays in the form
    assert _user(db, consultant).phone is None
    assert failures_for(db, coordinator) == MAX_FAILURES


def test_a_wrong_phone_keeps_what_was_typed_and_changes_nothing(
        app: Flask, db: Db, consultant: str, coordinator: str) -> None:
    browser = Browser(app)
    browser.login(coordinator)
    target = _user(db, consultant).id
    before = _account_events(db)
    response = browser.post(f"/admin/users/{target}",
                            _form(browser, target, name="Renamed", phone="701 12"))
    assert response.status_code == 400
    shown = page(response)
    assert shown.errors == ["This is not a phone number. Write it as +7 701 123 45 67."]
    assert (shown.inputs["name"], shown.inputs["phone"]) == ("Renamed", "701 12")
    assert _user(db, consultant).name == "Aigerim Nurlanovna"
    assert _account_events(db) == before


def test_closing_an_account_on_the_page_logs_its_owner_out(app: Flask, db: Db,
                                                           consultant: str,
                                                           coordinator: str) -> None:
    lawyer = Browser(app)
    lawyer.login(consultant)
    target = _user(db, consultant).id
    held = _held_question(db, target)
    browser = Browser(app, ip="203.0.113.8")
    browser.login(coordinator)
    assert _form(browser, target)["active"] == "1"  # ticked
    form = _form(browser, target, active=None)  # the box unticked
    assert browser.post(f"/admin/users/{target}", form).status_code == 303
    assert lawyer.get("/queue").status_code == 302
    assert _status(db, held) == (QUESTION_WAITING, None)
    row = next(r for r in page(browser.get("/admin/users")).rows if consultant in r)
    assert row[4] == "no"
    assert _account_events(db)[-1][1] == {"account": consultant, "active": False,
                                          "released_claims": 1}


def test_a_coordinator_does_not_lock_themselves_out(app: Flask, db: Db, consultant: str,
                                                    coordinator: str) -> None:
    browser = Browser(app)
    browser.login(coordinator)
    me = _user(db, coordinator).id
    # Their own page: the role and the box cannot be changed there; what the browser sends
    # keeps both (hidden fields), so changing their own name works.
    own = _form(browser, me, name="Dana K.")
    assert (own["role"], own["active"]) == ("coordinator", "1")
    assert browser.post(f"/admin/users/{me}", own).status_code == 303
    assert _user(db, coordinator).name == "Dana K."
    # A form sent around the page is refused all the same.
    for changed in ({"active": None}, {"role": "consultant"}):
        response = browser.post(f"/admin/users/{me}", _form(browser, me, **changed))
        assert response.status_code == 400, changed
        assert page(response).errors == ["You cannot close your own account or change your "
                                         "own role here. Ask another coordinator."]
    user = _user(db, coordinator)
    assert (user.active, user.role) == (True, "coordinator")


def test_two_coordinators_closing_each_other_at_once_leave_one(app: Flask, db: Db,
                                                                coordinator: str) -> None:
    """The first closing is not committed yet when the second one checks: the second waits
    for it (the coordinators' rows are locked) and then finds itself the last one."""
    users_cli(app, ["add", "second@example.kz", "--role", "coordinator", "--name", "Second"],
              input=f"{PASSWORD}\n{PASSWORD}\n")

    def first(session: Session) -> None:  # the second closing starts while it is held
        change_user(session, find_user(session, "second@example.kz"), active=False)

    with held_meanwhile(db, first), pytest.raises(UserError) as refused, db() as session:
        change_user(session, find_user(session, coordinator), active=False)
    assert refused.value.code == "last_coordinator"
    assert _user(db, coordinator).active is True
    assert _user(db, "second@example.kz").active is False


def test_consultants_cannot_change_accounts(app: Flask, db: Db, consultant: str,
                                           coordinator: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    target = _user(db, coordinator).id
    assert browser.get(f"/admin/users/{target}").status_code == 403
    token = browser.token("/queue")
    response = browser.post(f"/admin/users/{target}",
                            {"csrf_token": token, "name": "Mine now", "role": "consultant"})
    assert response.status_code == 403
    assert _user(db, coordinator).role == "coordinator"
    assert _user(db, coordinator).name == "Dana Coordinator"


def test_missing_accounts_and_unknown_roles(app: Flask, db: Db, coordinator: str) -> None:
    browser = Browser(app)
    browser.login(coordinator)
    assert browser.get("/admin/users/999").status_code == 404
    assert browser.get(f"/admin/users/{10**25}").status_code == 404
    token = browser.token("/queue")
    assert browser.post("/admin/users/999", {"csrf_token": token, "name": "x",
                                             "role": "consultant"}).status_code == 404
    me = _user(db, coordinator).id
    assert browser.post(f"/admin/users/{me}", {"csrf_token": token, "name": "x",
                                               "role": "admin"}).status_code == 400


# -- my account -------------------------------------------------------------------------------

def test_a_consultant_adds_their_own_phone(app: Flask, db: Db, consultant: str,
                                           coordinator: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    assert "/account" in page(browser.get("/queue")).links  # their name at the top
    shown = page(browser.get("/account"))
    assert shown.headings == ["My account"] and shown.inputs["phone"] == ""
    token = shown.inputs["csrf_token"]

    def save(phone: str, current: str = PASSWORD) -> Any:
        return browser.post("/account/phone", {"csrf_token": token, "phone": phone,
                                               "current": current})

    wrong = save("701 12")
    assert wrong.status_code == 400
    assert page(wrong).errors == ["This is not a phone number. Write it as +7 701 123 45 67."]
    assert page(wrong).inputs["phone"] == "701 12"
    # The hotline connects residents to this number: a session alone does not change it.
    unproven = save("8 701 765 43 21", current="not my password")
    assert unproven.status_code == 400
    assert page(unproven).errors == ["The current password is wrong."]
    assert page(unproven).inputs["phone"] == "8 701 765 43 21"
    assert failures_for(db, consultant) == 1
    # The hotline pays for each call to it: a Kazakhstan mobile or landline only (+7 is also
    # Russia's code; +7 809 is premium-rate).
    for elsewhere in ("+7 916 123 45 67", "+44 7911 123456", "+7 809 500 12 34"):
        refused = save(elsewhere)
        assert (refused.status_code, page(refused).errors) == (400, [
            "Give a Kazakhstan mobile or landline number: the hotline calls only those."])
    assert _user(db, consultant).phone is None and _own_events(db) == []
    saved = save("8 701 765 43 21")
    assert (saved.status_code, saved.headers["Location"]) == (303, "/account")
    again = browser.get("/account")
    assert "Your phone number is saved." in again.get_data(as_text=True)
    assert page(again).inputs["phone"] == "+77017654321"
    assert _user(db, consultant).phone == "+77017654321"
    me = _user(db, consultant).id
    assert _own_events(db) == [(me, {"account": consultant, "phone": True,
                                     "via": "account_page"})]
    save("+7 701 765 43 21")
    assert "Nothing was changed." in browser.get("/account").get_data(as_text=True)
    assert len(_own_events(db)) == 1
    boss = Browser(app)
    boss.login(coordinator)
    assert page(boss.get("/admin/audit?action=account")).rows[1][1:] == [
        "Aigerim Nurlanovna", "changed an account", "—",
        f"account: {consultant}; phone number changed; by its owner, on their account page"]


def test_a_consultant_changes_their_own_password(app: Flask, db: Db, consultant: str) -> None:
    here, elsewhere = Browser(app), Browser(app, ip="203.0.113.8")
    here.login(consultant)
    elsewhere.login(consultant)
    token = here.token("/account")

    def change(current: str, new: str, repeat: str) -> Any:
        return here.post("/account/password", {"csrf_token": token, "current": current,
                                                "new": new, "repeat": repeat})

    for (current, new, repeat), error in [
            (("not my password", NEW_PASSWORD, NEW_PASSWORD), "The current password is wrong."),
            ((PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x"),
             "The two new passwords are not the same."),
            ((PASSWORD, "short", "short"),
             "The new password needs at least 10 characters.")]:
        refused = change(current, new, repeat)
        assert (refused.status_code, page(refused).errors) == (400, [error])
    assert failures_for(db, consultant) == 1  # the wrong current password counts
    assert _own_events(db) == []
    assert elsewhere.get("/queue").status_code == 200
    changed = change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    assert (changed.status_code, changed.headers["Location"]) == (303, "/account")
    # This browser stays logged in; the other one is logged out.
    assert "Your password is changed." in here.get("/account").get_data(as_text=True)
    assert here.get("/queue").status_code == 200
    assert elsewhere.get("/queue").status_code == 302
    assert page(Browser(app, ip="203.0.113.9").login(consultant)).errors == [
        "Wrong email or password."]
    assert Browser(app, ip="203.0.113.10").login(
        consultant, NEW_PASSWORD).headers["Location"] == "/queue"
    me = _user(db, consultant).id
    assert _own_events(db) == [(me, {"account": consultant, "password": True,
                                         "via": "account_page"})]


def test_logging_out_everywhere_else_ends_a_copied_session(app: Flask, db: Db, consultant: str,
                                                            coordinator: str) -> None:
    """A logout ends only the browser's own cookie; a copy of it (a shared computer, a stolen
    cookie) goes on working until the owner logs out everywhere else from /account."""
    here, shared = Browser(app), Browser(app, ip="203.0.113.8")
    here.login(consultant)
    shared.login(consultant)
    copied = Browser(app, ip="198.51.100.7")
    cookie = shared.client.get_cookie("session", domain="hotline.test")
    assert cookie is not None
    copied.client.set_cookie("session", cookie.value, domain="hotline.test")
    assert copied.get("/queue").status_code == 200
    shared.logout()
    assert copied.get("/queue").status_code == 200  # what a logout cannot do
    response = here.post("/account/sessions", {"csrf_token": here.token("/account")})
    assert (response.status_code, response.headers["Location"]) == (303, "/account")
    assert "You are logged out everywhere else." in here.get("/account").get_data(as_text=True)
    assert here.get("/queue").status_code == 200
    assert copied.get("/queue").status_code == 302
    assert shared.login(consultant).headers["Location"] == "/queue"  # the password still works
    me = _user(db, consultant).id
    assert _own_events(db) == [(me, {"account": consultant, "sessions_ended": True,
                                     "via": "account_page"})]
    reader = Browser(app, ip="203.0.113.11")
    reader.login(coordinator)
    assert page(reader.get("/admin/audit?action=account")).rows[1][4] == (
        f"account: {consultant}; logged out everywhere else; by its owner, on their account "
        "page")


def test_guessing_the_current_password_is_stopped_as_logins_are(app: Flask, db: Db,
                                                                 consultant: str) -> None:
    browser = Browser(app)
    browser.login(consultant)
    token = browser.token("/account")
    sent = {"csrf_token": token, "new": NEW_PASSWORD, "repeat": NEW_PASSWORD}
    for _attempt in range(MAX_FAILURES - 1):
        assert browser.post("/account/password",
                            {**sent, "current": "guess"}).status_code == 400
    # The failure that reaches the limit says so, as at the login form.
    assert browser.post("/account/password", {**sent, "current": "guess"}).status_code == 429
    locked = browser.post("/account/password", {**sent, "current": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert page(locked).errors[0].startswith("Too many failed attempts. Changes are paused")
    # The phone too: the same password is asked for it.
    assert browser.post("/account/phone", {"csrf_token": token, "phone": "+77017654321",
                                           "current": PASSWORD}).status_code == 429
    assert _user(db, consultant).phone is None
    assert _own_events(db) == []
    # Nor can the owner log in elsewhere meanwhile, as after failed logins.
    assert Browser(app, ip="203.0.113.11").login(consultant).status_code == 429


def test_my_account_needs_a_login_and_a_csrf_token(app: Flask, db: Db, consultant: str) -> None:
    assert Browser(app).get("/account").headers["Location"] == "/login"
    assert Browser(app).post("/account/phone", {"phone": "+77017654321"}).status_code in (
        302, 400)
    browser = Browser(app)
    browser.login(consultant)
    assert browser.post("/account/phone", {"phone": "+77017654321",
                                           "current": PASSWORD}).status_code == 400
    assert browser.post("/account/password", {"current": PASSWORD, "new": NEW_PASSWORD,
                                              "repeat": NEW_PASSWORD}).status_code == 400
    assert browser.post("/account/sessions", {}).status_code == 400
    assert _user(db, consultant).phone is None and _own_events(db) == []
    assert browser.get("/queue").status_code == 200


def _own_events(db: Db) -> list[tuple[int | None, dict[str, object]]]:
    """The account events made on the account page (the accounts' creation comes first)."""
    return [(user, detail) for user, detail in _account_events(db)
            if detail.get("via") == "account_page"]


def failures_for(db: Db, email: str) -> int:
    with db() as session:
        return len(session.scalars(select(LoginAttempt).where(
            LoginAttempt.email == email)).all())
