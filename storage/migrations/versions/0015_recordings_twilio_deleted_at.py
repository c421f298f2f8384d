"""recordings.twilio_deleted_at: when Twilio's own copy of a recording was deleted.

Retention deletes a closed question's audio here after HOTLINE_AUDIO_RETENTION_DAYS; the
recording stayed in the Twilio account. The retention run now deletes that copy too (REST
DELETE Recordings/RE…), and this column says it is done (or that Twilio had none).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add recordings.twilio_deleted_at (NULL: not deleted at Twilio yet)."""
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("twilio_deleted_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    """Drop recordings.twilio_deleted_at."""
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("twilio_deleted_at")
