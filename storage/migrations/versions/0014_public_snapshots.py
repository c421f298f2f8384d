"""public_snapshots: the public figures of each month, computed once and then served unchanged.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the public_snapshots table (empty: the first visitor of a month fills its row)."""
    op.create_table(
        "public_snapshots",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_public_snapshots")),
    )


def downgrade() -> None:
    """Drop the public_snapshots table."""
    op.drop_table("public_snapshots")
