"""The worker's and the web processes' logging (`hotline worker`; gunicorn.conf.py): one line
per record, with the time, level and logger, and the same error repeated over and over told
once a minute.

Huey's consumer reads its queue and its schedule in a loop: with Redis down, each worker thread
logs "Error reading from queue" with a whole traceback every second, and the scheduler "Error
reading schedule." as often, some 13,000 lines a minute on two threads, which bury the line
that says what broke and fill the disk. RepeatedErrors lets the first of a kind through, holds
the same kind back for a minute, and then lets one through that says how many it held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# How long the same error is held back after it was last let through.
REPEAT_SECONDS = 60.0
# Kinds remembered before those older than REPEAT_SECONDS are forgotten.
MAX_KINDS = 1000


# Whole runs only: digits inside a Twilio ID (SM0123456789012abc…) are no number.
_NUMBER = re.compile(r"(?:\+|%2[Bb]|(?<![0-9A-Za-z%]))\d{7,}(\d{4})(?![0-9A-Za-z])")


def mask_numbers(text: str) -> str:
    """The text with every run of 11 or more digits (with or without a + or %2B) cut to its
    last four: "+77011234567" reads "…4567"."""
    return _NUMBER.sub(r"…\1", text)


class MaskNumbers(logging.Filter):
    """Cut the phone numbers in a library's records to their last four digits. twilio's HTTP
    client logs each request's URL and query at INFO (`twilio.http_client`): the SMS job's
    retry asks for the messages sent `To` the resident, whose number would be written whole
    wherever an operator's configuration lets INFO of that logger through."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask_numbers(text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


TWILIO_HTTP_LOGGER = "twilio.http_client"


def mask_twilio_numbers() -> None:
    """Put MaskNumbers on twilio's HTTP client's logger (once; hotline.outbound_sms does it
    before it makes a client)."""
    logger = logging.getLogger(TWILIO_HTTP_LOGGER)
    if not any(isinstance(f, MaskNumbers) for f in logger.filters):
        logger.addFilter(MaskNumbers())


class RepeatedErrors(logging.Filter):
    """Hold back a warning or error like one let through less than `every` seconds ago: the
    same message (before its arguments) and the same exception type, from any logger (each of
    Huey's worker threads has its own), so a fault that persists is told once a minute."""

    def __init__(self, every: float = REPEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        # kind -> (when one was last let through, how many held back since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through, or hold it back as a repeat (see the class)."""
        if record.levelno < logging.WARNING:
            return True
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (str(record.msg), error)
        now = self.clock()
        with self._lock:
            if len(self._seen) > MAX_KINDS:
                # Messages that name a path or an id are each a kind: forget those whose minute
                # is over (their held-back counts go untold), so the map does not grow forever.
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every}
            last = self._seen.get(kind)
            if last is not None and now - last[0] < self.every:
                self._seen[kind] = (last[0], last[1] + 1)
                return False
            self._seen[kind] = (now, 0)
        if last is not None and last[1]:
            # Appended after formatting, so a "%" in it cannot upset the record's arguments.
            record.msg = record.getMessage() + (
                f" [{last[1]} more like this in the last {int(now - last[0])} s]")
            record.args = None
        return True


# Told at INFO: the hotline's own records and Huey's (each job started and finished); every
# other library only from WARNING (Alembic announces each of its plugins at INFO).
INFO_LOGGERS = ("hotline", "huey")


def configure() -> None:
    """Log to stderr with times, through RepeatedErrors; do nothing where logging is set up
    already (a test's capture, an operator's own configuration)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RepeatedErrors())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
