"""Claims: which consultant is working on a question, since when, and when last active.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the claim columns to questions, with indexes for the holder and for lapsing."""
    with op.batch_alter_table("questions") as batch:
        batch.add_column(sa.Column("claimed_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claim_touched_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.create_foreign_key(op.f("fk_questions_claimed_by_id_users"), "users",
                                 ["claimed_by_id"], ["id"])
        batch.create_index(op.f("ix_questions_claimed_by_id"), ["claimed_by_id"])
        batch.create_index("ix_questions_status_claim_touched_at",
                           ["status", "claim_touched_at"])


def downgrade() -> None:
    """Drop the claim columns."""
    with op.batch_alter_table("questions") as batch:
        batch.drop_index("ix_questions_status_claim_touched_at")
        batch.drop_index(op.f("ix_questions_claimed_by_id"))
        batch.drop_constraint(op.f("fk_questions_claimed_by_id_users"), type_="foreignkey")
        batch.drop_column("claim_touched_at")
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by_id")
