"""My account, for every logged-in user: their own phone number (the one the hotline rings when
they call a resident back), their own password, and logging out everywhere else.

A volunteer who changes phones, or who was given a first password by the operator (`hotline
users add`), changes it here without anyone else. The current password is asked first for
either change, and a wrong one counts as a failed login (storage.users.confirm_password): a
session left open on a shared computer, or stolen, is not enough to put another phone where
residents' calls are connected, nor to guess a way to a new password. A new password ends the
account's sessions everywhere else (storage.users.set_password moves users.sessions_from, the
sessions' stamp); this browser is logged in again with the new stamp. "Log out everywhere
else" does the same without a new password. Each is an audit event.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_login import login_user
from sqlalchemy.orm import Session

from hotline import auth
from hotline.auth import client_address
from hotline.users_page import user_error
from hotline.workspace import ROLES, bp, runtime
from storage import audit
from storage.db import unit_of_work
from storage.models import User
from storage.phones import is_local_personal_phone, normalise_phone
from storage.users import (
    MIN_PASSWORD_LENGTH,
    UserError,
    change_user,
    end_other_sessions,
    set_password,
)


def _page(user: User, error: str | None = None, status: int = 200, *,
          phone: str | None = None, headers: dict[str, str] | None = None
          ) -> ResponseReturnValue:
    """The page; phone: what the user typed, shown again when it was refused."""
    html = render_template("account.html", name=user.name, email=user.email,
                           role=ROLES.get(user.role, user.role),
                           phone=(user.phone or "") if phone is None else phone, error=error,
                           min_length=MIN_PASSWORD_LENGTH)
    return html, status, headers or {}


def _audit(db: Session, user: User, **detail: Any) -> None:
    """An account event by its owner, on this page."""
    audit.record(db, user.id, audit.ACCOUNT, ip=client_address(), account=user.email,
                 **detail, via=audit.VIA_ACCOUNT_PAGE)


def _still_here(renewed: auth.Account, message: str) -> ResponseReturnValue:
    """After every other session of the user ended: this browser logged in again with the
    account's new stamp, back on the page with message."""
    login_user(renewed)
    flash(message)
    return redirect(url_for("workspace.account"), 303)


def _password_refused(db: Session, user: User, current: str, *,
                      phone: str | None = None) -> ResponseReturnValue | None:
    """The page saying why, if current is not the user's password (or the checks are paused
    after too many wrong ones); None if it is. phone: what they typed, shown again."""
    refused = auth.recheck_password(db, user, current)
    if refused is None:
        return None
    return _page(user, refused.message, refused.status, phone=phone, headers=refused.headers)


@bp.get("/account")
def account() -> ResponseReturnValue:
    """The logged-in user's own account."""
    with unit_of_work(runtime().sessions) as db:
        return _page(db.get_one(User, auth.current_account().id))


@bp.post("/account/phone")
def account_phone() -> ResponseReturnValue:
    """Save the user's own phone number (empty: none, and they cannot call back); the current
    password first: the hotline connects residents to this number, so a session someone else
    got hold of must not be enough to put their own phone there."""
    phone = request.form.get("phone", "").replace("\x00", "")[:40]
    current = request.form.get("current", "")
    with unit_of_work(runtime().sessions) as db:
        user = db.get_one(User, auth.current_account().id)
        refused = _password_refused(db, user, current, phone=phone)
        if refused is not None:
            return refused
        region = runtime().settings.default_region
        typed = normalise_phone(phone, region)
        if typed is not None and not is_local_personal_phone(typed, region):
            # Twilio calls this number at the hotline's cost whenever they call back: one's
            # own account takes the country's mobile and landline numbers only (a coordinator
            # can set another on /admin/users).
            return _page(user, _("Give a Kazakhstan mobile or landline number: the hotline "
                                 "calls only those."), 400, phone=phone)
        try:
            changes = change_user(db, user, phone=phone, region=region)
        except UserError as exc:
            db.rollback()
            return _page(user, user_error(exc), 400, phone=phone)
        if changes:
            _audit(db, user, **changes)
    flash(_("Your phone number is saved.") if changes else _("Nothing was changed."))
    return redirect(url_for("workspace.account"), 303)


@bp.post("/account/password")
def account_password() -> ResponseReturnValue:
    """Change the user's own password: the current one first, the new one twice."""
    current = request.form.get("current", "")
    new = request.form.get("new", "")[:auth.MAX_PASSWORD_LENGTH]
    repeated = request.form.get("repeat", "")[:auth.MAX_PASSWORD_LENGTH]
    with unit_of_work(runtime().sessions) as db:
        user = db.get_one(User, auth.current_account().id)
        refused = _password_refused(db, user, current)
        if refused is not None:
            return refused
        if new != repeated:
            return _page(user, _("The two new passwords are not the same."), 400)
        try:
            set_password(db, user, new)
        except UserError:
            db.rollback()
            return _page(user, _("The new password needs at least %(count)s characters.",
                                 count=MIN_PASSWORD_LENGTH), 400)
        _audit(db, user, password=True)
        renewed = auth.Account.of(user)
    return _still_here(renewed, _("Your password is changed. Wherever else you were logged in, "
                                  "you are logged out."))


@bp.post("/account/sessions")
def account_sessions() -> ResponseReturnValue:
    """Log the user out everywhere but here: a session cookie outlives a logout elsewhere (it
    is signed, not kept on the server), so a browser left logged in on a shared computer, or a
    copied cookie, ends only this way, by a new password, or by closing the account. No
    password is asked: it only takes access away."""
    with unit_of_work(runtime().sessions) as db:
        user = db.get_one(User, auth.current_account().id)
        end_other_sessions(db, user)
        _audit(db, user, sessions_ended=True)
        renewed = auth.Account.of(user)
    return _still_here(renewed, _("You are logged out everywhere else."))
