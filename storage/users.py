"""Workspace accounts: creating users, checking passwords, and the failed-login limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from storage.claims import release_claims_of
from storage.models import ROLE_COORDINATOR, ROLES, LoginAttempt, User, utcnow
from storage.phones import normalise_phone

MIN_PASSWORD_LENGTH = 10
# After MAX_FAILURES failed logins for one email, or MAX_FAILURES_PER_ADDRESS from one address
# (whatever the emails), within FAILURE_WINDOW, every attempt is refused for LOCKOUT (counted
# from the failure that reached the limit). The address's limit is higher: volunteers in one
# office, or on one mobile operator's shared address (carrier-grade NAT), share an address,
# and one of them mistyping a password must not lock the others out; a guesser trying many
# accounts from one address is still stopped after 20 tries.
MAX_FAILURES = 5
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
# Failed attempts are kept this long, then pruned.
ATTEMPTS_KEPT = timedelta(days=1)

# Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, 3 passes).
hasher = PasswordHasher()


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why, in English (the
    command line's language), and `code` names the reason for a page to say in its own."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LoginOutcome:
    """What came of a login attempt: the user, or a refusal (locked until a time, or not)."""

    user: User | None
    locked_until: datetime | None = None


def normalise_email(raw: str) -> str:
    """Return the email as it is stored and looked up: trimmed and lower-cased."""
    return raw.strip().lower()


def check_new_user(session: Session, email: str, name: str, role: str,
                   phone: str | None = None, region: str = "KZ") -> tuple[str, str, str | None]:
    """Check all of a new user but the password (so that the command line can refuse before it
    asks for one); return the email, name and phone as stored. Raise UserError on bad or
    duplicate input."""
    email = normalise_email(email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or any(ch.isspace() for ch in email) or len(email) > 254:
        raise UserError(f"not an email address: {email!r}", "email")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}", "role")
    name = name.strip()
    if not name:
        raise UserError("a name is needed", "name")
    e164 = _checked_phone(phone, region) if phone else None
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise UserError(f"a user with the email {email} exists already", "exists")
    return email, name, e164


def add_user(session: Session, email: str, name: str, role: str, password: str,
             phone: str | None = None, region: str = "KZ") -> User:
    """Create a user with a hashed password; raise UserError on bad or duplicate input."""
    email, name, e164 = check_new_user(session, email, name, role, phone, region)
    password_hash = _checked_password(password)
    user = User(email=email, name=name, role=role, password_hash=password_hash,
                phone=e164)
    session.add(user)
    session.flush()
    return user


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters",
                        "password")
    return hasher.hash(password)


def _checked_phone(phone: str, region: str) -> str:
    e164 = normalise_phone(phone, region)
    if e164 is None:
        raise UserError(f"not a phone number: {phone!r}", "phone")
    return e164


def find_user(session: Session, email: str) -> User:
    """Return the user with this email; raise UserError when there is none."""
    user = session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise UserError(f"no user with the email {normalise_email(email)}", "missing")
    return user


def _last_coordinator(session: Session, user: User) -> bool:
    """Whether the user is the only active coordinator. The active coordinators' rows are
    locked first (PostgreSQL; SQLite's transactions are serial): two coordinators closing each
    other at the same moment are decided one after the other, and the second is refused."""
    active = session.scalars(select(User.id).where(
        User.role == ROLE_COORDINATOR, User.active.is_(True)).with_for_update()).all()
    return user.role == ROLE_COORDINATOR and user.active and not set(active) - {user.id}


def change_user(session: Session, user: User, *, name: str | None = None,
                role: str | None = None, phone: str | None = None, active: bool | None = None,
                region: str = "KZ", now: datetime | None = None) -> dict[str, Any]:
    """Change what is given (None leaves a field; phone "" removes the number); return the
    changes for the audit log (never the number itself: "phone" is True when it was changed).

    Closing an account (active=False) ends its sessions at the next request (hotline.auth
    checks `active` on every request) and returns the questions it holds to the queue. Raise
    UserError on bad input, and where no active coordinator would be left to manage accounts.
    """
    changes: dict[str, Any] = {}
    if name is not None and name.strip()[:120] != user.name:
        if not name.strip():
            raise UserError("a name is needed", "name")
        changes["name"] = user.name = name.strip()[:120]
    if phone is not None:
        e164 = _checked_phone(phone, region) if phone.strip() else None
        if e164 != user.phone:
            user.phone = e164
            changes["phone"] = e164 is not None
    if role is not None and role != user.role:
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}", "role")
        if _last_coordinator(session, user):
            raise UserError("this is the only active coordinator: make another one first",
                            "last_coordinator")
        changes["role"] = user.role = role
    if active is not None and active != user.active:
        if not active and _last_coordinator(session, user):
            raise UserError("this is the only active coordinator: make another one first",
                            "last_coordinator")
        changes["active"] = user.active = active
        if not active:
            # Its sessions end for good: opening the account again does not bring them back.
            user.sessions_from = now or utcnow()
            changes["released_claims"] = len(release_claims_of(session, user.id, now or utcnow()))
    session.flush()
    return changes


def set_password(session: Session, user: User, password: str,
                 now: datetime | None = None) -> None:
    """Give the user a new password; the sessions opened with the old one end (sessions_from,
    part of the stamp hotline.auth keeps in each session), and earlier failed logins for it
    are forgotten.

    Only a new password ends sessions: a login that rehashes the same password at a new cost
    (attempt_login) changes the hash but not the stamp, so the user's other devices stay."""
    user.password_hash = _checked_password(password)
    session.execute(delete(LoginAttempt).where(LoginAttempt.email == user.email))
    end_other_sessions(session, user, now)


def end_other_sessions(session: Session, user: User, now: datetime | None = None) -> None:
    """End every session of the user opened until now (a cookie copied from a shared computer
    or stolen, a phone left somewhere): hotline.auth's stamp is users.sessions_from. The page
    that asks logs its own browser in again."""
    user.sessions_from = now or utcnow()
    session.flush()


def list_users(session: Session) -> list[User]:
    """Return every user, coordinators first, then by name."""
    return list(session.scalars(select(User).order_by(User.role.desc(), User.name, User.id)))


def attempt_login(session: Session, email: str, password: str, ip: str,
                  now: datetime | None = None) -> LoginOutcome:
    """Check a login, counting failures per email and per address; refuse while locked."""
    now = now or utcnow()
    email = normalise_email(email)[:254]
    ip = ip[:45]
    locked = locked_until(session, email, ip, now)
    if locked is not None:
        # Not even checked: a locked account must not become a password oracle.
        return LoginOutcome(user=None, locked_until=locked)
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        # Spend the same time as for a real user, so timing does not tell who has an account.
        _verify(_dummy_hash(), password)
    elif _verify(user.password_hash, password) and user.active:
        if hasher.check_needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(password)
        user.last_login_at = now
        # The owner got in: earlier failures for the email no longer count against them (those
        # from the address still do, so one valid account cannot reset an attacker's count).
        session.execute(delete(LoginAttempt).where(LoginAttempt.email == email))
        return LoginOutcome(user=user)
    return _failed(session, email, ip, now)


def confirm_password(session: Session, user: User, password: str, ip: str,
                     now: datetime | None = None) -> LoginOutcome:
    """Check a logged-in user's own password again (before it is changed), as a login checks
    it: a wrong one counts as a failed login for the email and the address, and while they
    are locked nothing is checked. Unlike a login it changes no last-login time."""
    now = now or utcnow()
    ip = ip[:45]
    locked = locked_until(session, user.email, ip, now)
    if locked is not None:
        return LoginOutcome(user=None, locked_until=locked)
    if _verify(user.password_hash, password):
        return LoginOutcome(user=user)
    return _failed(session, user.email, ip, now)


def _failed(session: Session, email: str, ip: str, now: datetime) -> LoginOutcome:
    """Count a wrong password; the outcome says whether that locked the email or address."""
    session.add(LoginAttempt(email=email, ip=ip, attempted_at=now))
    session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at < now - ATTEMPTS_KEPT))
    session.flush()
    return LoginOutcome(user=None, locked_until=locked_until(session, email, ip, now))


def locked_until(session: Session, email: str, ip: str, now: datetime) -> datetime | None:
    """Return when logins for this email or from this address are allowed again, if locked."""
    ends = [_lock_end(session, LoginAttempt.email == email, MAX_FAILURES, now),
            _lock_end(session, LoginAttempt.ip == ip, MAX_FAILURES_PER_ADDRESS, now)]
    latest = max((end for end in ends if end is not None), default=None)
    return latest if latest is not None and latest > now else None


def _lock_end(session: Session, criterion: ColumnElement[bool], limit: int,
              now: datetime) -> datetime | None:
    since = now - FAILURE_WINDOW - LOCKOUT
    times = list(session.scalars(
        select(LoginAttempt.attempted_at)
        .where(criterion, LoginAttempt.attempted_at > since)
        .order_by(LoginAttempt.attempted_at)
    ))
    end = None
    for first, last in zip(times, times[limit - 1:], strict=False):
        if last - first <= FAILURE_WINDOW:
            end = last + LOCKOUT
    return end


def _verify(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return hasher.hash("no such user: a hash to spend the same time on")
