"""users.sessions_from: sessions opened before this moment are over.

Set when an account is closed (storage.users.change_user), so that opening it again does not
bring back the sessions it had; part of the session's stamp (hotline.auth), as the password
hash is.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add users.sessions_from (empty: every session as valid as before)."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("sessions_from", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop users.sessions_from."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sessions_from")
