"""Calling a resident back through the consultant's phone, the outcome form, and SMS answers.

Routes for consultants are on the workspace blueprint (behind its login check); Twilio's
webhooks for the bridged call are on `hooks`, signed like every Twilio route and CSRF-exempt.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy.orm import Session

from hotline.auth import Account
from hotline.workspace import bp  # noqa: F401  (routes are added to the workspace blueprint)
from storage.models import Question

hooks = Blueprint("callback_hooks", __name__)


def panel(session: Session, question: Question, account: Account) -> dict[str, Any]:
    """What templates/callback_panel.html needs, for the question's page."""
    return {}
