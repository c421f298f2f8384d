"""The audit log: who opened, listened to, claimed, called, changed and closed what. Never commits.

An event is written in the same transaction as the change it records, so a change is never
without its event and an event never without its change. Opening a page and listening to audio
change nothing else; their events are written in a transaction of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from storage.models import AuditEvent, utcnow

# AuditEvent.action: one word for each thing a user can do to a question or an account.
OPENED = "opened"
LISTENED = "listened"
CLAIMED = "claimed"
RELEASED = "released"
CALLED = "called"
CHANGED = "changed"
NOTED = "noted"
SMS_SENT = "sms_sent"
OUTCOME = "outcome"
CLOSED = "closed"
# A question closed as resolved, back in the queue by "the system" (no user): the SMS that was
# its answer did not reach the resident (storage.callbacks.reopen_unanswered). Detail: sms_id.
REOPENED = "reopened"
# An account made or changed (storage.users), from the users page or the `hotline users`
# command (user_id None); no question. Detail: the account's email and what changed.
ACCOUNT = "account"
# Where an account change was made (detail "via"; none: the users page, by a coordinator).
VIA_CLI = "cli"
VIA_ACCOUNT_PAGE = "account_page"  # by the account's owner (hotline.account_page)
ACTIONS = (OPENED, LISTENED, CLAIMED, RELEASED, CALLED, CHANGED, NOTED, SMS_SENT, OUTCOME,
           CLOSED, REOPENED, ACCOUNT)


def record(session: Session, user_id: int | None, action: str, question_id: int | None = None,
           *, ip: str | None = None, at: datetime | None = None, **detail: Any) -> AuditEvent:
    """Add an event; detail holds what changed (JSON-serialisable, never a full phone number)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    event = AuditEvent(user_id=user_id, action=action, question_id=question_id,
                       detail=detail, ip=ip, at=at or utcnow())
    session.add(event)
    return event


def events(session: Session, *, question_id: int | None = None, user_id: int | None = None,
           actions: Sequence[str] = (), before_id: int | None = None,
           limit: int = 100) -> list[AuditEvent]:
    """Return events, newest first, with their users; before_id pages back through older ones."""
    statement = select(AuditEvent).options(selectinload(AuditEvent.user))
    if question_id is not None:
        statement = statement.where(AuditEvent.question_id == question_id)
    if user_id is not None:
        statement = statement.where(AuditEvent.user_id == user_id)
    if actions:
        statement = statement.where(AuditEvent.action.in_(actions))
    if before_id is not None:
        statement = statement.where(AuditEvent.id < before_id)
    return list(session.scalars(statement.order_by(AuditEvent.id.desc()).limit(limit)))
