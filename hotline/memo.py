"""Results an app keeps for a few seconds: what anyone may ask for as often as they like (the
public figures, the health checks) costs the database one computation per period, however
many ask; a request that comes while it is being computed waits for that one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import current_app

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Kept:
    lock: threading.Lock
    at: float | None = None
    value: Any = None
    failing: bool = False  # the last computation failed: value is older than seconds


def kept(name: str, seconds: float, compute: Callable[[], T], *,
         stale_on_error: bool = False) -> T:
    """compute()'s result, computed again when the app's last one is seconds old or more.

    If computing fails: with stale_on_error, the last result, however old, if there is one
    (the public figures through a database outage; failing(name) tells), and the next request
    tries again; else the error."""
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
        return cast(T, entry.value)


def failing(name: str) -> bool:
    """Whether the app's last try to compute name failed, so that kept gave an older result."""
    return _entry(name).failing


def _entry(name: str) -> _Kept:
    shelf: dict[str, _Kept] = current_app.extensions.setdefault("hotline_kept", {})
    return shelf.setdefault(name, _Kept(threading.Lock()))
