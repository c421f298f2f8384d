"""The callback queue's order. Never commits.

The queue is ordered by `Question.priority_at`: the arrival time, moved earlier for each reason
to hurry. One indexed column keeps the order cheap at 100,000 questions; it is recomputed
whenever one of its reasons changes (reprioritise).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from storage.models import Question

# How much earlier each reason puts a question, as if it had waited that much longer.
URGENT_BOOST = timedelta(days=7)
REPEAT_CALLER_BOOST = timedelta(days=1)
FAILED_ATTEMPT_BOOST = timedelta(hours=12)


def priority_at(created_at: datetime, *, urgent: bool, repeat_caller: bool,
                callback_attempts: int) -> datetime:
    """Return the moment the queue sorts a question by (earlier comes first)."""
    boost = FAILED_ATTEMPT_BOOST * callback_attempts
    if urgent:
        boost += URGENT_BOOST
    if repeat_caller:
        boost += REPEAT_CALLER_BOOST
    return created_at - boost


def reprioritise(question: Question) -> None:
    """Recompute the question's place in the queue after urgent, repeat or attempts changed."""
    question.priority_at = priority_at(
        question.created_at, urgent=bool(question.urgent),
        repeat_caller=bool(question.repeat_caller),
        callback_attempts=question.callback_attempts or 0)
