"""Calling a resident back through the consultant's phone, the outcome form, and SMS answers.

Routes for consultants are on the workspace blueprint (behind its login check); Twilio's
webhooks for the bridged call are on `hooks`, signed like every Twilio route and CSRF-exempt.
"""

from __future__ import annotations

from flask import Blueprint

from hotline.workspace import bp  # noqa: F401  (routes are added to the workspace blueprint)

hooks = Blueprint("callback_hooks", __name__)
