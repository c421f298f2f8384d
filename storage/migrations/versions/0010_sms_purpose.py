"""sms_messages.purpose: why an automatic SMS was sent (a receipt, or the callback gave up).

A recorded question gets one receipt (hotline.receipts), and a resident at most one in a few
hours: the column is how the worker tells that one went already.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add sms_messages.purpose (empty for every SMS so far)."""
    with op.batch_alter_table("sms_messages") as batch:
        batch.add_column(sa.Column("purpose", sa.String(length=20), nullable=True))


def downgrade() -> None:
    """Drop sms_messages.purpose."""
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_column("purpose")
