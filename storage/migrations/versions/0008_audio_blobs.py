"""Recordings' audio in the database: the audio_blobs table (HOTLINE_AUDIO_STORE=database).

One row per stored recording, keyed by the recording's file_path (storage.audio_store); the
bytes are a BLOB on SQLite and bytea on PostgreSQL. With the default folder store the table
stays empty.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the audio_blobs table."""
    op.create_table(
        "audio_blobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audio_blobs")),
        sa.UniqueConstraint("key", name=op.f("uq_audio_blobs_key")),
    )


def downgrade() -> None:
    """Drop the audio_blobs table (and any audio kept in it)."""
    op.drop_table("audio_blobs")
