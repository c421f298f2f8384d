"""The worker's log filter: the same error told once a minute, with how many were held back."""

from __future__ import annotations

import logging

import pytest

from hotline import logs
from hotline.logs import RepeatedErrors


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, error: type[BaseException] | None = None,
           level: int = logging.ERROR, name: str = "huey.consumer.Worker-1") -> logging.LogRecord:
    exc_info = (error, error("x"), None) if error else None
    return logging.LogRecord(name, level, __file__, 1, message, args or None, exc_info)


def test_the_same_error_is_told_once_a_minute_with_a_count() -> None:
    clock = Clock()
    errors = RepeatedErrors(every=60, clock=clock)
    assert errors.filter(record("Error reading from queue", error=ConnectionError))
    for second in range(1, 60):
        clock.now += 1
        # Another worker thread's logger: the same kind.
        assert not errors.filter(record("Error reading from queue", error=ConnectionError,
                                        name=f"huey.consumer.Worker-{second % 2 + 1}"))
    clock.now += 1
    told = record("Error reading from queue", error=ConnectionError)
    assert errors.filter(told)
    assert told.getMessage() == "Error reading from queue [59 more like this in the last 60 s]"
    clock.now += 1
    assert not errors.filter(record("Error reading from queue", error=ConnectionError))


def test_other_errors_and_info_pass() -> None:
    clock = Clock()
    errors = RepeatedErrors(every=60, clock=clock)
    assert errors.filter(record("Error reading from queue", error=ConnectionError))
    assert errors.filter(record("Error reading from queue", error=TimeoutError))
    assert errors.filter(record("Error reading schedule.", error=ConnectionError))
    assert errors.filter(record("Executing %s", "sweep", level=logging.INFO))
    assert errors.filter(record("Executing %s", "sweep", level=logging.INFO))
    # A message's arguments do not make it another kind; a "%" in them is kept as it is.
    assert errors.filter(record("task %s failed", "a"))
    assert not errors.filter(record("task %s failed", "b"))
    clock.now += 61
    later = record("task %s failed", "100%")
    assert errors.filter(later)
    assert later.getMessage() == "task 100% failed [1 more like this in the last 61 s]"


def test_kinds_whose_minute_is_over_are_forgotten_past_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask's "Exception on /questions/123 [GET]" is a kind per path: the map stays bounded."""
    monkeypatch.setattr(logs, "MAX_KINDS", 10)
    clock = Clock()
    errors = RepeatedErrors(every=60, clock=clock)
    for n in range(10):
        assert errors.filter(record(f"Exception on /questions/{n} [GET]", error=KeyError))
    clock.now += 61
    for n in range(10, 13):
        assert errors.filter(record(f"Exception on /questions/{n} [GET]", error=KeyError))
    assert len(errors._seen) <= 3 + 1


@pytest.mark.parametrize(("line", "masked"), [
    ("GET /Messages.json?To=%2B77011234567&From=%2B77000000000",
     "GET /Messages.json?To=…4567&From=…0000"),
    ("Query Params: {'To': '+77011234567'}", "Query Params: {'To': '…4567'}"),
    ("to 87011234567 and 77011234567", "to …4567 and …4567"),
    # Twilio's IDs keep their digits (an operator matches them with the console), and so do
    # short numbers (a page, an error code).
    ("/Accounts/AC11111111111111111111111111111111/Messages/SM0123456789012abcdef.json",
     "/Accounts/AC11111111111111111111111111111111/Messages/SM0123456789012abcdef.json"),
    ("Page 2, code 21211", "Page 2, code 21211"),
])
def test_numbers_are_cut_to_their_last_four_digits(line: str, masked: str) -> None:
    assert logs.mask_numbers(line) == masked
