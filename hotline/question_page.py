"""A question's page: audio, transcript and correction, caller history, notes, tags, closing."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from hotline import auth
from hotline.workspace import bp
from storage.models import ROLE_CONSULTANT, ROLE_COORDINATOR


@bp.get("/questions/<int:question_id>")
@auth.role_required(ROLE_CONSULTANT, ROLE_COORDINATOR)
def question(question_id: int) -> ResponseReturnValue:
    """Show a question (placeholder until the page is built)."""
    return render_template("message.html", title=f"#{question_id}", message="",
                           back="/queue")
