"""sms_messages.status_check_at and status_checks: when the sweep asks Twilio next.

An outbound message whose delivery Twilio has not reported (its status callback was sent
before the job stored the message's SID and was dropped, or never came) is asked about by the
sweep (hotline.outbound_sms.reconcile_statuses): 15 minutes after it was sent, then at
doubling intervals, a few times. The next time is kept, indexed, so the sweep reads only the
messages due, however many wait; existing rows are not asked about (NULL).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two columns and the index on status_check_at."""
    with op.batch_alter_table("sms_messages") as batch:
        batch.add_column(sa.Column("status_check_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("status_checks", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.create_index("ix_sms_messages_status_check_at", ["status_check_at"])


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_index("ix_sms_messages_status_check_at")
        batch.drop_column("status_checks")
        batch.drop_column("status_check_at")
