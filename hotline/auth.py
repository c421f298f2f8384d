"""Logging in to the workspace: accounts in sessions, CSRF, idle expiry, and role checks."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session as DbSession
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from hotline import i18n
from hotline.config import LOCAL_TIME
from hotline.runtime import Runtime
from storage import audit
from storage.claims import release_claims_of
from storage.db import unit_of_work
from storage.models import User, utcnow
from storage.users import attempt_login, confirm_password

log = logging.getLogger(__name__)


bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

View = TypeVar("View", bound=Callable[..., ResponseReturnValue])


@dataclass(frozen=True)
class Account:
    """The logged-in user as a request sees them (Flask-Login's user object)."""

    id: int
    email: str
    name: str
    role: str
    # Part of the session's user id: a new password or closing the account ends the sessions
    # opened before.
    password_stamp: str

    is_authenticated = True
    is_active = True
    is_anonymous = False

    @classmethod
    def of(cls, user: User) -> Account:
        """Take what a request needs from a user row."""
        return cls(id=user.id, email=user.email, name=user.name, role=user.role,
                   password_stamp=_stamp(user))

    def get_id(self) -> str:
        """Return what the session stores to find this account again."""
        return f"{self.id}:{self.password_stamp}"

    def has_role(self, *roles: str) -> bool:
        """Tell whether the account has one of the roles."""
        return self.role in roles


# The longest password a form takes (the login form's limit too).
MAX_PASSWORD_LENGTH = 1024


class LoginForm(FlaskForm):  # type: ignore[misc]
    """Email and password, with a CSRF token."""

    email = EmailField(_l("Email"), validators=[DataRequired(), Length(max=254)],
                       render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField(_l("Password"), validators=[DataRequired(),
                                                         Length(max=MAX_PASSWORD_LENGTH)],
                             render_kw={"autocomplete": "current-password"})


def _stamp(user: User) -> str:
    """What a session keeps of the account: a new password, or the account closed, changes
    it (storage.users sets sessions_from), and every session with the old stamp is over.

    Not the password hash itself: a login rehashes the same password when the hashing cost
    changes (storage.users.attempt_login), and that must not log the user out elsewhere.
    """
    since = user.sessions_from.isoformat() if user.sessions_from else ""
    return hashlib.sha256(f"{user.id}|{since}".encode()).hexdigest()[:16]


def _runtime() -> Runtime:
    return cast(Runtime, current_app.extensions["hotline"])


def load_account(session_id: str) -> Account | None:
    """Find the session's account; none if it was deactivated or its password changed."""
    user_id, _sep, stamp = session_id.partition(":")
    if not user_id.isdigit():
        return None
    # Read-only: every workspace request looks its account up, and need not queue behind the
    # writers (SQLite) for it.
    with unit_of_work(_runtime().sessions, read_only=True) as db:
        user = db.get(User, int(user_id))
        if user is None or not user.active or _stamp(user) != stamp:
            return None
        return Account.of(user)


def client_address() -> str | None:
    """The request's client address as the hotline stores it (audit events, failed logins): 45
    characters at most (an IPv6 address), None when the server was not told it."""
    return (request.remote_addr or "")[:45] or None


@dataclass(frozen=True)
class Refused:
    """Why a change that needs the user's own password again was refused, for its page."""

    message: str
    status: int
    headers: dict[str, str]


def recheck_password(db: DbSession, user: User, password: str) -> Refused | None:
    """Check the logged-in user's own password again before a change that a session alone
    (left open on a shared computer, or stolen) must not make: the phone residents are
    connected to, a new password. None when it is right.

    A wrong one counts as a failed login for the email and the address, and while either is
    locked nothing is checked (storage.users.confirm_password): no guessing through a form.
    """
    checked = confirm_password(db, user, password[:MAX_PASSWORD_LENGTH],
                               client_address() or "unknown")
    if checked.locked_until is not None:
        until = checked.locked_until.astimezone(LOCAL_TIME).strftime("%H:%M")
        seconds = max(1, int((checked.locked_until - utcnow()).total_seconds()))
        return Refused(_("Too many failed attempts. Changes are paused until %(time)s "
                         "(Almaty time).", time=until), 429, {"Retry-After": str(seconds)})
    if checked.user is None:
        return Refused(_("The current password is wrong."), 400, {})
    return None


def current_account() -> Account:
    """Return the logged-in account (only inside views that require one)."""
    return cast(Account, current_user._get_current_object())


def role_required(*roles: str) -> Callable[[View], View]:
    """Let only logged-in users with one of the roles in: others to /login, the wrong role 403."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if not current_user.is_authenticated:
                return cast(ResponseReturnValue, login_manager.unauthorized())
            if not current_account().has_role(*roles):
                abort(403)
            return view(*args, **kwargs)

        return cast(View, guarded)

    return decorate


# The longest address kept for after the login: it waits in the session, a cookie that browsers
# keep only up to 4 KB (an address of a few hundred letters outside ASCII would not fit).
MAX_NEXT_LENGTH = 1000


def to_login() -> ResponseReturnValue:
    """Send a logged-out visitor to the login form, and back to the page after it: with its
    query (the queue's filters) when short, else the page alone."""
    page = request.full_path if request.query_string else request.path
    if len(page) > MAX_NEXT_LENGTH:
        page = request.path
    if len(page) <= MAX_NEXT_LENGTH:
        session["next"] = page
    return redirect(url_for("auth.login"))


# What an email address looks like, for the log: something at a domain with a dot, no spaces.
_EMAIL_SHAPE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def _as_logged(typed: str) -> str:
    """The email of a failed login as the log may keep it: an address as typed, but text that
    is no address (a password typed into the email field, as happens) only by its length."""
    if len(typed) <= 254 and _EMAIL_SHAPE.fullmatch(typed.strip()):
        return repr(typed.strip())
    return f"<not an email address, {len(typed)} characters>"


def _safe_next(target: object) -> str | None:
    """Return target if it is a path on this site (never another host: no open redirect)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the login form; log the user in, or say why not."""
    if current_user.is_authenticated:
        return redirect(url_for("workspace.queue"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form, error=None), 400 if form.errors else 200
    ip = client_address() or "unknown"
    with unit_of_work(_runtime().sessions) as db:
        outcome = attempt_login(db, form.email.data, form.password.data, ip)
        account = Account.of(outcome.user) if outcome.user else None
    if account is not None:
        next_url = _safe_next(session.pop("next", None))
        session.clear()  # a fresh session (and CSRF token) for the logged-in user
        login_user(account)
        # Idle expiry: a permanent session's cookie is signed anew on every request, and Flask
        # refuses one whose signature is older than PERMANENT_SESSION_LIFETIME.
        session.permanent = True
        log.info("login: user %s from %s", account.id, ip)
        return redirect(next_url or url_for("workspace.queue"))
    if outcome.locked_until is not None:
        log.warning("login refused, too many failures: %s from %s", _as_logged(form.email.data),
                    ip)
        until = outcome.locked_until.astimezone(LOCAL_TIME).strftime("%H:%M")
        error = _("Too many failed attempts. Logging in is paused for this account or this "
                  "network until %(time)s (Almaty time).", time=until)
        seconds = max(1, int((outcome.locked_until - utcnow()).total_seconds()))
        return (render_template("login.html", form=form, error=error), 429,
                {"Retry-After": str(seconds)})
    log.info("login failed: %s from %s", _as_logged(form.email.data), ip)
    return render_template("login.html", form=form, error=_("Wrong email or password.")), 200


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Log out and forget the session.

    The questions the user holds go back to the queue, each with its audit event, and the login
    page says which: a colleague need not wait HOTLINE_CLAIM_IDLE_MINUTES for the claims to
    lapse. One with a call going on stays claimed and lapses when the call ends. The user's
    other logged-in browsers (a logout ends only this one's session) then find those questions
    back in the queue, as after a lapse."""
    released: list[int] = []
    if current_user.is_authenticated:
        account, now = current_account(), utcnow()
        try:
            with unit_of_work(_runtime().sessions) as db:
                released = release_claims_of(db, account.id, now)
                for question_id in released:
                    audit.record(db, account.id, audit.RELEASED, question_id,
                                 ip=client_address(), at=now, logged_out=True)
        except Exception:  # noqa: BLE001 - the logout itself must not fail with the database
            # (locked, down): the session ends all the same; the claims lapse as they would.
            log.exception("logout: user %s: held questions not returned to the queue",
                          account.id)
            released = []
        log.info("logout: user %s, questions back in the queue: %s", account.id, released)
    logout_user()
    session.clear()
    if len(released) == 1:
        flash(_("You are logged out. Question %(ids)s, which you held, is back in the queue.",
                ids=released[0]))
    elif released:
        flash(_("You are logged out. Questions %(ids)s, which you held, are back in the queue.",
                ids=", ".join(map(str, released))))
    return redirect(url_for("auth.login"))


# Fields of the workspace's forms that hold what a consultant wrote (an SMS, a note, a
# corrected transcript, a referral): shown back on a refusal or an error page to copy.
WRITTEN_FIELDS = ("body", "corrected_text", "referral")


def written_draft() -> str | None:
    """What the user wrote in the form being answered (WRITTEN_FIELDS), to show back when it
    was not kept."""
    if request.method != "POST":
        return None
    return next((request.form[name] for name in WRITTEN_FIELDS if request.form.get(name)),
                None)


def csrf_failed(error: CSRFError) -> ResponseReturnValue:
    """Answer a form without a valid CSRF token (often: a page left open too long, or a login
    in another tab), with what the user wrote in it to copy: an SMS or a referral written
    for half an hour is not lost to an expired session."""
    message = _("The form was open too long or came from elsewhere. Please try again.")
    if request.endpoint == "auth.login":
        return render_template("login.html", form=LoginForm(formdata=None), error=message), 400
    return render_template("message.html", title=_("Please try again"), message=message,
                           draft=written_draft(), back=url_for("workspace.queue")), 400


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus the work for a request without the cookie.

    Flask builds its signing serializer before it looks for the cookie; Twilio's webhooks,
    most of the requests, never carry one (bench/webhook_throughput.py).
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Return a new empty session when there is no cookie, else Flask's own answer."""
        # A request without any Cookie header (every webhook) skips parsing the cookies too.
        if "HTTP_COOKIE" not in request.environ or not request.cookies.get(
                self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Flask's own, minus reading seven cookie settings for a session that stays empty.

        An empty session that nobody emptied sets and deletes no cookie; Flask then only adds
        "Vary: Cookie" when the session was read, and so does this.
        """
        if not session and not session.modified:
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    """Set up logins, sessions, CSRF (webhooks exempt: Twilio signs them) and the languages."""
    from hotline import callbacks, outbound_sms, sms, voice

    settings = _runtime_of(app).settings
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Demo mode serves plain http on 127.0.0.1; everywhere else the cookie needs https.
        SESSION_COOKIE_SECURE=not settings.demo,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        # The token lives as long as the session, which expires on its own.
        WTF_CSRF_TIME_LIMIT=None,
        # Where to go after logging in is kept in the session, not in the login URL (to_login).
        USE_SESSION_FOR_NEXT=True,
    )
    app.session_interface = CookieSessions()
    i18n.init_app(app)
    csrf.init_app(app)
    for webhooks in (voice.bp, sms.bp, outbound_sms.bp, callbacks.hooks):
        csrf.exempt(webhooks)
    login_manager.init_app(app)
    login_manager.user_loader(load_account)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    login_manager.unauthorized_handler(to_login)
    app.register_error_handler(CSRFError, csrf_failed)
    app.register_blueprint(bp)


def _runtime_of(app: Flask) -> Runtime:
    return cast(Runtime, app.extensions["hotline"])
