"""gunicorn's settings file: gunicorn reads ./gunicorn.conf.py from its working folder (the
checkout: the Procfile's `web:`, deploy/hotline-web.service). Its own options stay on the command
line; this turns gunicorn's control socket off (below) and gives the app's log records
(hotline.*, Flask, SQLAlchemy) the worker's format: time, level and logger on each line, and a
fault that persists (a database that does not answer each webhook) told once a minute with a
count (hotline.logs). gunicorn's own error and access logs keep their handlers."""

from __future__ import annotations

from typing import Any

# gunicorn 27's control socket (for `gunicornc`) is not used here: without this it is made in
# ~/.gunicorn/ (outside the checkout and the data folder; under the unit's ProtectHome=yes a
# warning at each start), and two servers started side by side share its one default path.
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    """In each web worker, before it loads the app (whose start-up warnings then have times)."""
    from hotline import logs

    logs.configure()
