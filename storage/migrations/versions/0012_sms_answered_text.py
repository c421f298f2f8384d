"""callers.sms_answered_text: the message a topic answer replied to, for "0" to pass it on.

A resident who wrote their problem out and got a topic's explainer replies 0 to reach a
lawyer; the message they wrote is then the question, and they need not type it again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add callers.sms_answered_text (empty: "0" after an earlier answer asks, as before)."""
    with op.batch_alter_table("callers") as batch:
        batch.add_column(sa.Column("sms_answered_text", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop callers.sms_answered_text."""
    with op.batch_alter_table("callers") as batch:
        batch.drop_column("sms_answered_text")
