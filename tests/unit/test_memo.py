"""hotline.memo: results kept for a few seconds, and older ones through a failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from hotline.memo import Result, kept, kept_or_older


@pytest.fixture
def app() -> Iterator[Flask]:
    application = Flask(__name__)
    with application.app_context():
        yield application


class Source:
    """Counts its computations; fails while told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.broken = False

    def __call__(self) -> int:
        self.calls += 1
        if self.broken:
            raise RuntimeError("the database is gone")
        return self.calls


def test_a_result_is_computed_once_per_period(app: Flask) -> None:
    source = Source()
    assert [kept("figures", 60, source) for _ in range(3)] == [1, 1, 1]
    assert kept("figures", 0, source) == 2  # a period of 0: every call computes
    assert source.calls == 2


def test_without_an_older_result_the_error_is_raised(app: Flask) -> None:
    source = Source()
    source.broken = True
    with pytest.raises(RuntimeError):
        kept_or_older("figures", 0, source)
    kept("other", 0, Source())
    with pytest.raises(RuntimeError):
        kept("other", 0, source)  # kept never gives an older result


def test_an_older_result_is_given_marked_stale_until_computing_works_again(
        app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    source = Source()
    assert kept_or_older("figures", 0, source) == Result(1, stale=False)
    source.broken = True
    assert kept_or_older("figures", 0, source) == Result(1, stale=True)
    assert kept_or_older("figures", 0, source) == Result(1, stale=True)  # tried each time
    assert source.calls == 3
    assert "figures: computing failed; the last result is shown" in caplog.text
    source.broken = False
    assert kept_or_older("figures", 0, source) == Result(4, stale=False)


def test_each_app_keeps_its_own(app: Flask) -> None:
    source = Source()
    assert kept("figures", 60, source) == 1
    with Flask("another").app_context():
        assert kept("figures", 60, source) == 2
    assert kept("figures", 60, source) == 1
