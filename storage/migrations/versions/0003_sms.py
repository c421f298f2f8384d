"""SMS: messages, opt-out and conversation state on callers, question text.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the SMS tables and columns."""
    with op.batch_alter_table("callers") as batch:
        batch.add_column(sa.Column("sms_opted_out", sa.Boolean(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("sms_opted_out_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("sms_topic", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("sms_more", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sms_awaiting_question", sa.Boolean(), server_default="0",
                                   nullable=False))
    with op.batch_alter_table("questions") as batch:
        batch.add_column(sa.Column("text", sa.Text(), nullable=True))
    op.create_table(
        "sms_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("caller_id", sa.Integer(), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("question_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("encoding", sa.String(length=8), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["caller_id"], ["callers.id"],
                                name=op.f("fk_sms_messages_caller_id_callers")),
        sa.ForeignKeyConstraint(["question_id"], ["questions.id"],
                                name=op.f("fk_sms_messages_question_id_questions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_messages")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_sms_messages_message_sid")),
    )
    op.create_index(op.f("ix_sms_messages_caller_id"), "sms_messages", ["caller_id"])
    op.create_index(op.f("ix_sms_messages_question_id"), "sms_messages", ["question_id"])
    op.create_index("ix_sms_messages_phone_direction_created_at", "sms_messages",
                    ["phone", "direction", "created_at"])


def downgrade() -> None:
    """Drop the SMS tables and columns."""
    op.drop_table("sms_messages")
    with op.batch_alter_table("questions") as batch:
        batch.drop_column("text")
    with op.batch_alter_table("callers") as batch:
        batch.drop_column("sms_awaiting_question")
        batch.drop_column("sms_more")
        batch.drop_column("sms_topic")
        batch.drop_column("sms_opted_out_at")
        batch.drop_column("sms_opted_out")
