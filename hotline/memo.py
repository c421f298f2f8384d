"""Results an app keeps for a few seconds: what anyone may ask for as often as they like (the
public figures, the health checks) costs the database one computation per period, however
many ask; a request that comes while it is being computed waits for that one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from flask import current_app

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Kept:
    lock: threading.Lock
    at: float | None = None
    value: Any = None
    failing: bool = False  # the last computation failed: value is older than seconds


@dataclass(frozen=True)
class Result(Generic[T]):
    """What kept_or_older gave: the value, and whether it is older than asked for."""

    value: T
    stale: bool  # computing it afresh failed: this is the last result, however old


def kept(name: str, seconds: float, compute: Callable[[], T]) -> T:
    """compute()'s result, computed again when the app's last one is seconds old or more;
    if computing fails, the error."""
    return _kept(name, seconds, compute, stale_on_error=False).value


def kept_or_older(name: str, seconds: float, compute: Callable[[], T]) -> Result[T]:
    """As kept, but if computing fails the last result, however old, if there is one (the
    public figures through a database outage), marked stale; the next request tries again.
    The value and its mark are read together, under the entry's lock."""
    return _kept(name, seconds, compute, stale_on_error=True)


def _kept(name: str, seconds: float, compute: Callable[[], T], *,
          stale_on_error: bool) -> Result[T]:
    entry = _entry(name)
    with entry.lock:
        if entry.at is None or time.monotonic() - entry.at >= seconds:
            try:
                entry.value, entry.at = compute(), time.monotonic()
                entry.failing = False
            except Exception:
                if not stale_on_error or entry.at is None:
                    raise
                entry.failing = True
                log.exception("%s: computing failed; the last result is shown", name)
        return Result(cast(T, entry.value), entry.failing)


def _entry(name: str) -> _Kept:
    shelf: dict[str, _Kept] = current_app.extensions.setdefault("hotline_kept", {})
    return shelf.setdefault(name, _Kept(threading.Lock()))
