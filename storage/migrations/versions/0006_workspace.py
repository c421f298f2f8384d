"""The consultants' workspace: priority, tags, closing, notes, callback attempts, audit log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHEN = sa.DateTime(timezone=True)
_QUEUE_INDEXES = {
    "ix_questions_status_priority_at": ["status", "priority_at", "id"],
    "ix_questions_language_status": ["language", "status"],
    "ix_questions_topic_status": ["topic", "status"],
    "ix_questions_region_status": ["region", "status"],
    "ix_questions_channel_status": ["channel", "status"],
    "ix_questions_status_closed_at": ["status", "closed_at"],
}


def upgrade() -> None:
    """Add the workspace's columns and tables; existing questions keep their arrival order."""
    with op.batch_alter_table("questions") as batch:
        batch.add_column(sa.Column("urgent", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("repeat_caller", sa.Boolean(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("priority_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("callback_attempts", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("next_callback_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("first_callback_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("region", sa.String(64), nullable=True))
        batch.add_column(sa.Column("village", sa.String(120), nullable=True))
        batch.add_column(sa.Column("corrected_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("referral", sa.Text(), nullable=True))
        batch.add_column(sa.Column("closed_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("closed_by_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("close_reason", sa.String(20), nullable=True))
        batch.create_foreign_key(op.f("fk_questions_closed_by_id_users"), "users",
                                 ["closed_by_id"], ["id"])
        for name, columns in _QUEUE_INDEXES.items():
            batch.create_index(name, columns)
    op.execute("UPDATE questions SET priority_at = created_at")

    with op.batch_alter_table("sms_messages") as batch:
        batch.add_column(sa.Column("sent_by_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_sms_messages_sent_by_id_users"), "users",
                                 ["sent_by_id"], ["id"])

    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(["question_id"], ["questions.id"],
                                name=op.f("fk_notes_question_id_questions")),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"],
                                name=op.f("fk_notes_author_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(op.f("ix_notes_question_id"), "notes", ["question_id"])

    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=False),
        sa.Column("consultant_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("consultant_call_sid", sa.String(64), nullable=True),
        sa.Column("consultant_status", sa.String(20), nullable=True),
        sa.Column("resident_call_sid", sa.String(64), nullable=True),
        sa.Column("resident_status", sa.String(20), nullable=True),
        sa.Column("duration", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("ended_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(["question_id"], ["questions.id"],
                                name=op.f("fk_callback_attempts_question_id_questions")),
        sa.ForeignKeyConstraint(["consultant_id"], ["users.id"],
                                name=op.f("fk_callback_attempts_consultant_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_attempts")),
        sa.UniqueConstraint("consultant_call_sid",
                            name=op.f("uq_callback_attempts_consultant_call_sid")),
    )
    op.create_index("ix_callback_attempts_question_id_created_at", "callback_attempts",
                    ["question_id", "created_at"])
    op.create_index(op.f("ix_callback_attempts_consultant_id"), "callback_attempts",
                    ["consultant_id"])

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_audit_events_user_id_users")),
        sa.ForeignKeyConstraint(["question_id"], ["questions.id"],
                                name=op.f("fk_audit_events_question_id_questions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])
    op.create_index("ix_audit_events_question_id_at", "audit_events", ["question_id", "at"])
    op.create_index("ix_audit_events_user_id_at", "audit_events", ["user_id", "at"])


def downgrade() -> None:
    """Drop the workspace's tables and columns."""
    op.drop_table("audit_events")
    op.drop_table("callback_attempts")
    op.drop_table("notes")
    with op.batch_alter_table("sms_messages") as batch:
        batch.drop_constraint(op.f("fk_sms_messages_sent_by_id_users"), type_="foreignkey")
        batch.drop_column("sent_by_id")
    with op.batch_alter_table("questions") as batch:
        for name in _QUEUE_INDEXES:
            batch.drop_index(name)
        batch.drop_constraint(op.f("fk_questions_closed_by_id_users"), type_="foreignkey")
        for column in ("close_reason", "closed_by_id", "closed_at", "referral", "corrected_text",
                       "village", "region", "first_callback_at", "next_callback_at",
                       "callback_attempts", "priority_at", "repeat_caller", "urgent"):
            batch.drop_column(column)
