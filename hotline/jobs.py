"""Background jobs (Huey): SqliteHuey in the data folder by default, RedisHuey with REDIS_URL.

The database, not the queue, is the source of truth: a job only moves a row forward, so running
it twice is harmless, and `hotline recordings retry` re-runs whatever a lost message left behind.
"""

from __future__ import annotations

import logging

from huey import Huey, RedisHuey, SqliteHuey

from hotline.config import Settings
from hotline.recordings import download_recording
from hotline.runtime import Runtime, build_runtime

log = logging.getLogger(__name__)


def make_huey(settings: Settings) -> Huey:
    """Return the queue the settings ask for."""
    if settings.redis_url:
        return RedisHuey("hotline", url=settings.redis_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("hotline", filename=str(settings.jobs_file))


huey = make_huey(Settings.from_env())
_runtime: Runtime | None = None


def bind(runtime: Runtime) -> None:
    """Let jobs of this process use runtime (the web app binds its own)."""
    global _runtime
    _runtime = runtime


def current_runtime() -> Runtime:
    """Return the bound runtime, building one from the environment in a worker process."""
    global _runtime
    if _runtime is None:
        _runtime = build_runtime(Settings.from_env())
    return _runtime


@huey.task(retries=3, retry_delay=60)  # type: ignore[untyped-decorator]
def download_recording_job(recording_id: int) -> str:
    """Download one recorded question (retried later if the database itself failed)."""
    return download_recording(current_runtime(), recording_id)
