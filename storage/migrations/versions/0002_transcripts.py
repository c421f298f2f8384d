"""Transcription state on questions, and the transcripts table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add transcription state to questions and create transcripts."""
    with op.batch_alter_table("questions") as batch:
        batch.add_column(sa.Column("transcription_state", sa.String(length=12),
                                   server_default="pending", nullable=False))
        batch.add_column(sa.Column("transcription_attempts", sa.Integer(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("transcription_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("transcription_updated_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.create_index("ix_questions_transcription",
                           ["transcription_state", "transcription_updated_at"])
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("elapsed", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["question_id"], ["questions.id"],
                                name=op.f("fk_transcripts_question_id_questions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcripts")),
        sa.UniqueConstraint("question_id", name=op.f("uq_transcripts_question_id")),
    )


def downgrade() -> None:
    """Drop transcripts and the transcription columns."""
    op.drop_table("transcripts")
    with op.batch_alter_table("questions") as batch:
        batch.drop_index("ix_questions_transcription")
        batch.drop_column("transcription_updated_at")
        batch.drop_column("transcription_error")
        batch.drop_column("transcription_attempts")
        batch.drop_column("transcription_state")
