"""The queue's counts: one covering index; every question has a place in the queue.

ix_questions_queue_counts holds every column the queue's counts read (storage.queue.queue_counts):
the open questions' GROUP BY reads only the index, and the closed questions' count under two or
more filters scans the index's closed entries instead of looking up tens of thousands of rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["status", "language", "topic", "region", "channel", "next_callback_at"]


def upgrade() -> None:
    """Add the counts' index; give questions without a place in the queue their arrival time."""
    op.create_index("ix_questions_queue_counts", "questions", COLUMNS)
    op.execute("UPDATE questions SET priority_at = created_at WHERE priority_at IS NULL")


def downgrade() -> None:
    """Drop the counts' index."""
    op.drop_index("ix_questions_queue_counts", table_name="questions")
