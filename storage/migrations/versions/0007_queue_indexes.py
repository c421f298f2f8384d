"""The queue's indexes: one covering the counts, and the filters' indexes lead to closing time.

- ix_questions_queue_counts holds every column the queue's counts read
  (storage.queue.queue_counts): the open questions' GROUP BY reads only the index, and the
  closed questions' count under two or more filters scans the index's closed entries instead of
  looking up tens of thousands of rows.
- The filters' indexes (language, status), (topic, status), (region, status), (channel, status)
  of 0006 get closed_at as a third column: the closed tab filtered by a value reads that value's
  closed questions newest first from the index, instead of walking every closed question by
  closing time until enough match (SQLite has no statistics to choose between the two).
- Every question gets a place in the queue: priority_at is set where it is missing.

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

COUNTS = ["status", "language", "topic", "region", "channel", "next_callback_at"]
FILTERS = ("language", "topic", "region", "channel")


def upgrade() -> None:
    """Add the counts' index, extend the filters' ones, and place every question."""
    op.create_index("ix_questions_queue_counts", "questions", COUNTS)
    for column in FILTERS:
        op.create_index(f"ix_questions_{column}_status_closed_at", "questions",
                        [column, "status", "closed_at"])
        op.drop_index(f"ix_questions_{column}_status", table_name="questions")
    op.execute("UPDATE questions SET priority_at = created_at WHERE priority_at IS NULL")


def downgrade() -> None:
    """Go back to 0006's indexes."""
    for column in FILTERS:
        op.create_index(f"ix_questions_{column}_status", "questions", [column, "status"])
        op.drop_index(f"ix_questions_{column}_status_closed_at", table_name="questions")
    op.drop_index("ix_questions_queue_counts", table_name="questions")
