"""The audit log page, for coordinators: who opened, listened to, claimed, called, changed and
closed which question, and when; newest first, filtered by question, user and action, paged back
through older events by id (`before`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from hotline import auth
from hotline.question_page import CLOSE_REASONS, region_name
from hotline.workspace import bp, local_time, runtime, topic_title
from storage import audit as audit_log
from storage.db import unit_of_work
from storage.models import ROLE_COORDINATOR, AuditEvent
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


def describe(detail: dict[str, Any]) -> str:
    """An event's detail in words: changed fields by name, codes by their titles."""
    parts = []
    for key, value in detail.items():
        if key == "fields" and isinstance(value, list):
            names = ", ".join(str(FIELD_NAMES.get(str(f), f)) for f in value)
            parts.append(str(_("fields: %(names)s", names=names)))
        elif key == "values" and isinstance(value, dict):
            parts.extend(f"{FIELD_NAMES.get(str(k), k)} → {_value(str(k), v)}"
                         for k, v in value.items())
        elif key == "note_id":
            parts.append(str(_("note %(id)s", id=value)))
        elif key == "length":
            parts.append(str(_("%(count)s characters", count=value)))
        elif key == "reason":
            parts.append(str(_("reason: %(reason)s",
                               reason=CLOSE_REASONS.get(str(value), str(value)))))
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
    return int(value) if value.isdigit() and len(value) < 12 else None


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
