"""gunicorn's settings file: gunicorn reads ./gunicorn.conf.py from its working folder (the
checkout: the Procfile's `web:`, deploy/hotline-web.service). Its own options stay on the command
line; this only gives the app's log records (hotline.*, Flask, SQLAlchemy) the worker's format:
time, level and logger on each line, and a fault that persists (a database that does not answer
each webhook) told once a minute with a count (hotline.logs). gunicorn's own error and access
logs keep their handlers."""

from __future__ import annotations

from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    """In each web worker, before it loads the app (whose start-up warnings then have times)."""
    from hotline import logs

    logs.configure()
