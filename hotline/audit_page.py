"""The audit log page, for coordinators: who opened, listened to, claimed, called, changed and
closed which question, and when; newest first, filtered by question, user and action, paged back
through older events by id (`before`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from hotline import auth
from hotline.callbacks import OUTCOME_WORDS
from hotline.question_page import CLOSE_REASONS, region_name
from hotline.workspace import ROLES, bp, local_time, runtime, topic_title
from storage import audit as audit_log
from storage.db import unit_of_work
from storage.models import MAX_ROW_ID, ROLE_COORDINATOR, AuditEvent
from storage.users import list_users

AUDIT_PAGE_SIZE = 50
ACTION_NAMES = {
    audit_log.OPENED: _l("opened"),
    audit_log.LISTENED: _l("listened"),
    audit_log.CLAIMED: _l("took the question"),
    audit_log.RELEASED: _l("released"),
    audit_log.CALLED: _l("called back"),
    audit_log.CHANGED: _l("changed"),
    audit_log.NOTED: _l("added a note"),
    audit_log.SMS_SENT: _l("sent an SMS"),
    audit_log.OUTCOME: _l("recorded an outcome"),
    audit_log.CLOSED: _l("closed the question"),
    audit_log.REOPENED: _l("put the question back in the queue (its SMS answer did not arrive)"),
    audit_log.ACCOUNT: _l("changed an account"),
}
assert tuple(ACTION_NAMES) == audit_log.ACTIONS
FIELD_NAMES = {
    "corrected_text": _l("corrected transcript"),
    "topic": _l("topic"),
    "region": _l("region"),
    "village": _l("village"),
    "urgent": _l("urgent"),
}


@dataclass(frozen=True)
class EventRow:
    """One event as the table shows it."""

    id: int
    at: str
    user: str
    action: str
    question_id: int | None
    detail: str


def _value(field: str, value: Any) -> str:
    if field == "topic":
        return topic_title(value) if value else "—"
    if field == "region":
        return region_name(value)
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    return "—" if value is None else str(value)


def _time(value: Any) -> str:
    """A time the event holds as ISO 8601 (UTC), shown as Almaty's wall clock."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return local_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _automatic(value: Any) -> str:
    return str(_("sent automatically") if value else _("sent by a consultant"))


# The details events carry (storage.question_page, hotline.callbacks), each in words; a detail
# whose value is None says nothing and is left out. A key not here is shown as it is stored.
DETAILS: dict[str, Callable[[Any], str]] = {
    "note_id": lambda v: str(_("note %(id)s", id=v)),
    # storage.claims: a claim not touched for HOTLINE_CLAIM_IDLE_MINUTES, ended by the system.
    "lapsed_claim_of": lambda v: str(_("%(name)s's claim lapsed: left idle", name=v)),
    "logged_out": lambda v: str(_("on logging out")) if v else "",
    "length": lambda v: str(_("%(count)s characters", count=v)),
    "reason": lambda v: str(_("reason: %(reason)s",
                              reason=CLOSE_REASONS.get(str(v), str(v)))),
    "outcome": lambda v: str(_("outcome: %(outcome)s",
                               outcome=OUTCOME_WORDS.get(str(v), str(v)))),
    "attempt_id": lambda v: str(_("call attempt %(id)s", id=v)),
    "failed_attempts": lambda v: str(_("failed attempts: %(count)s", count=v)),
    "with_question": lambda v: str(_("in the same call as question %(id)s", id=v)),
    "referral": lambda v: str(_("referred to: %(organisation)s", organisation=v)),
    "next_callback_at": lambda v: str(_("next try after %(time)s (Almaty)", time=_time(v))),
    "retry_planned_for": lambda v: str(_("called before the try planned for %(time)s (Almaty)",
                                         time=_time(v))),
    "message_id": lambda v: str(_("SMS %(id)s", id=v)),
    "sms_id": lambda v: str(_("SMS %(id)s", id=v)),
    "automatic": _automatic,
    "segments": lambda v: str(_("SMS parts: %(count)s", count=v)),
    "encoding": lambda v: str(_("encoding: %(encoding)s", encoding=v)),
    # Accounts (storage.users.change_user; hotline.cli_users, hotline.workspace).
    "account": lambda v: str(_("account: %(email)s", email=v)),
    "created": lambda v: str(_("created")) if v else "",
    "name": lambda v: str(_("name → %(name)s", name=v)),
    "role": lambda v: str(_("role → %(role)s", role=ROLES.get(str(v), str(v)))),
    "phone": lambda v: str(_("phone number changed") if v else _("phone number removed")),
    "active": lambda v: str(_("opened again") if v else _("closed: cannot log in")),
    "released_claims": lambda v: str(_("questions returned to the queue: %(count)s", count=v)),
    "password": lambda v: str(_("new password")) if v else "",
    "sessions_ended": lambda v: str(_("logged out everywhere else")) if v else "",
    "via": lambda v: _VIA[v]() if v in _VIA else str(v),
}


# Where an account was changed ("via"; the users page, by a coordinator, records none).
_VIA: dict[str, Callable[[], str]] = {
    audit_log.VIA_CLI: lambda: str(_("on the server's command line")),
    audit_log.VIA_ACCOUNT_PAGE: lambda: str(_("by its owner, on their account page")),
}


def describe(detail: dict[str, Any]) -> str:
    """An event's detail in words: changed fields by name, codes by their titles, times in
    Almaty's time; a detail this page does not know is shown as `key: value`."""
    parts = []
    for key, value in detail.items():
        if key == "fields" and isinstance(value, list):
            names = ", ".join(str(FIELD_NAMES.get(str(f), f)) for f in value)
            parts.append(str(_("fields: %(names)s", names=names)))
        elif key == "values" and isinstance(value, dict):
            parts.extend(f"{FIELD_NAMES.get(str(k), k)} → {_value(str(k), v)}"
                         for k, v in value.items())
        elif key in DETAILS:
            words = DETAILS[key](value) if value is not None else ""
            if words:
                parts.append(words)
        else:
            parts.append(f"{key}: {value}")
    return "; ".join(parts)


def _row(event: AuditEvent) -> EventRow:
    return EventRow(
        id=event.id,
        at=local_time(event.at),
        user=event.user.name if event.user else str(_("the system")),
        action=str(ACTION_NAMES.get(event.action, event.action)),
        question_id=event.question_id,
        detail=describe(event.detail or {}),
    )


def _number(name: str) -> int | None:
    value = request.args.get(name, "").strip().lstrip("#")
    # ASCII only: str.isdigit() accepts "²", which int() refuses. No larger than an id can be:
    # PostgreSQL refuses to compare an INTEGER column with one (a 500).
    if not (value.isascii() and value.isdigit() and len(value) < 12):
        return None
    number = int(value)
    return number if number <= MAX_ROW_ID else None


@bp.get("/admin/audit")
@auth.role_required(ROLE_COORDINATOR)
def audit() -> ResponseReturnValue:
    """Show the audit log, newest first, with filters and paging back in time."""
    question_id = _number("question")
    user_id = _number("user")
    action = request.args.get("action", "")
    if action not in audit_log.ACTIONS:
        action = ""
    before = _number("before")
    with unit_of_work(runtime().sessions) as db:
        found = audit_log.events(db, question_id=question_id, user_id=user_id,
                                 actions=(action,) if action else (), before_id=before,
                                 limit=AUDIT_PAGE_SIZE + 1)
        rows = [_row(e) for e in found[:AUDIT_PAGE_SIZE]]
        users = [(u.id, u.name) for u in list_users(db)]
    filters: dict[str, Any] = {k: v for k, v in {"question": question_id, "user": user_id,
                                                 "action": action}.items() if v}
    older = (url_for("workspace.audit", before=rows[-1].id, **filters)
             if len(found) > AUDIT_PAGE_SIZE else None)
    newest = url_for("workspace.audit", **filters) if before is not None else None
    return render_template(
        "audit.html", rows=rows, users=users, actions=list(ACTION_NAMES.items()),
        question_id=question_id, user_id=user_id, action=action, older=older, newest=newest)
