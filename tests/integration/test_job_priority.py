"""Job priorities on the real queues: SqliteHuey (a file) and PriorityRedisHuey (Redis); and
the nightly jobs' claim in the queue's shared store, which lets one of several workers run them.

The jobs are enqueued as the app enqueues them (the task objects of hotline.jobs, with their
priorities) into a queue built by `make_huey` for the backend, and read back raw from its
storage: the order the workers would take them in.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from huey import Huey, RedisHuey
from huey.api import Task

from hotline import jobs
from hotline.config import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
JOBS = (jobs.download_recording_job, jobs.transcribe_question_job, jobs.send_sms_job,
        jobs.sweep_job)


def make_queue(tmp_path: Path, name: str, redis_url: str | None) -> Huey:
    """The queue make_huey builds for these settings, knowing the app's jobs (as a worker does,
    by importing hotline.jobs; here the app's own queue is the one of the environment)."""
    queue = jobs.make_huey(Settings.from_env({}).override(
        data_dir=tmp_path, queue_name=name, redis_url=redis_url))
    for job in JOBS:
        queue._registry.register(job.task_class)
    return queue


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Huey]:
    """An empty queue of each kind the settings can ask for."""
    name = f"hotlinepriority{uuid.uuid4().hex[:8]}"  # no dashes: Huey drops them from Redis keys
    redis_url = REDIS_URL if request.param == "redis" else None
    queue = make_queue(tmp_path, name, redis_url)
    try:
        yield queue
    finally:
        queue.storage.flush_all()


def taken_in_order(queue: Huey) -> list[tuple[str, tuple[int, ...]]]:
    """Dequeue every message, raw, as a worker would take them: (job name, arguments)."""
    taken = []
    while (data := queue.storage.dequeue()) is not None:
        message = queue.serializer.deserialize(data)
        taken.append((message.name.rsplit(".", 1)[-1], tuple(message.args)))
    return taken


def test_sweep_then_sms_then_downloads_then_transcriptions_whatever_came_first(
        queue: Huey) -> None:
    for question_id in (1, 2, 3):
        queue.enqueue(jobs.transcribe_question_job.s(question_id))
    queue.enqueue(jobs.download_recording_job.s(10))
    queue.enqueue(jobs.transcribe_question_job.s(4))
    queue.enqueue(jobs.send_sms_job.s(100))
    queue.enqueue(jobs.sweep_job.s())  # as the scheduler enqueues it every minute
    queue.enqueue(jobs.download_recording_job.s(11))
    assert taken_in_order(queue) == [
        ("sweep_job", ()),
        ("send_sms_job", (100,)),
        ("download_recording_job", (10,)),  # within a priority: first come, first served
        ("download_recording_job", (11,)),
        ("transcribe_question_job", (1,)),
        ("transcribe_question_job", (2,)),
        ("transcribe_question_job", (3,)),
        ("transcribe_question_job", (4,)),
    ]


def unordered(task: Task) -> Task:
    """The task as the older version enqueued it: without a priority."""
    task.priority = None
    return task


def test_a_sqlite_queue_has_nothing_to_move(tmp_path: Path) -> None:
    queue = make_queue(tmp_path, "hotline", None)
    queue.enqueue(jobs.transcribe_question_job.s(1))
    assert jobs.move_unordered_jobs(queue) == 0
    assert taken_in_order(queue) == [("transcribe_question_job", (1,))]


@pytest.mark.redis
def test_jobs_left_in_the_unordered_redis_queue_are_moved_with_their_priorities(
        tmp_path: Path) -> None:
    name = f"hotlinelegacy{uuid.uuid4().hex[:8]}"
    legacy = RedisHuey(name, url=REDIS_URL)  # what REDIS_URL gave before priorities
    for job in JOBS:
        legacy._registry.register(job.task_class)
    queue = make_queue(tmp_path, name, REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        # A web process of the older version, during a deploy: both queues get jobs.
        legacy.enqueue(unordered(jobs.transcribe_question_job.s(1)))
        legacy.enqueue(unordered(jobs.download_recording_job.s(10)))
        queue.enqueue(jobs.transcribe_question_job.s(2))
        legacy.enqueue(unordered(jobs.transcribe_question_job.s(3)))
        assert client.type(legacy.storage.queue_key) == b"list"
        assert client.type(queue.storage.queue_key) == b"zset"
        assert jobs.move_unordered_jobs(queue) == 3
        assert jobs.move_unordered_jobs(queue) == 0
        assert client.exists(legacy.storage.queue_key) == 0
        assert taken_in_order(queue) == [
            ("download_recording_job", (10,)),
            ("transcribe_question_job", (2,)),
            ("transcribe_question_job", (1,)),
            ("transcribe_question_job", (3,)),
        ]
    finally:
        legacy.storage.flush_all()
        queue.storage.flush_all()


def test_a_redis_that_stops_answering_fails_an_enqueue_within_seconds(tmp_path: Path) -> None:
    """A Redis on another machine that accepts connections and then says nothing (a network
    split, a hung server): enqueueing fails within REDIS_CONNECT_DEFAULTS' seconds, so the
    webhook that enqueues goes on (hotline.voice._store_question; the sweep enqueues later)
    instead of waiting past Twilio's 15 s. redis-py before 8 has no timeouts of its own and
    would wait for ever: the queue's connections carry the hotline's."""
    mute = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    port = mute.getsockname()[1]
    try:
        queue = make_queue(tmp_path, "hotlinemute", f"redis://127.0.0.1:{port}/0")
        kwargs = queue.storage.pool.connection_kwargs
        assert {name: kwargs[name] for name in jobs.REDIS_CONNECT_DEFAULTS} == \
            jobs.REDIS_CONNECT_DEFAULTS
        outcome: list[BaseException | None] = []

        def enqueue() -> None:
            try:
                queue.enqueue(jobs.download_recording_job.s(1))
            except BaseException as error:  # noqa: BLE001 - what it raised is the result
                outcome.append(error)
            else:
                outcome.append(None)

        sender = threading.Thread(target=enqueue, daemon=True)
        sender.start()
        # Within Twilio's 15 s, with the question already stored (5 s: socket_timeout).
        sender.join(timeout=12)
        assert not sender.is_alive(), "the enqueue still waits for Redis after 12 s"
        [error] = outcome
        assert isinstance(error, redis.exceptions.TimeoutError)
        # REDIS_URL's own settings win over the defaults.
        slower = make_queue(tmp_path, "hotlinemute2",
                            f"redis://127.0.0.1:{port}/0?socket_timeout=9")
        kwargs = slower.storage.pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (9, 3)
    finally:
        mute.close()


@pytest.mark.parametrize("redis_url", [None, pytest.param(REDIS_URL, marks=pytest.mark.redis)])
def test_of_several_workers_one_runs_each_nightly_job(tmp_path: Path,
                                                      redis_url: str | None) -> None:
    """Every worker's scheduler enqueues the nightly jobs: two workers on one queue (two
    machines on one Redis; two processes on one SQLite file) run each job once a night."""
    name = f"hotlinenightly{uuid.uuid4().hex[:8]}"
    first, second = (make_queue(tmp_path, name, redis_url) for _worker in range(2))
    night = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # 03:00 on 2 March, Almaty
    try:
        assert jobs.first_tonight(first, "backup", night)
        assert not jobs.first_tonight(second, "backup", night)
        assert not jobs.first_tonight(first, "backup", night + timedelta(hours=3))
        assert jobs.first_tonight(second, "retention", night)  # each job has its own claim
        # 19:00 UTC is the next day in Almaty: the next night's run.
        assert jobs.first_tonight(second, "backup", night + timedelta(hours=21))
        assert not jobs.first_tonight(first, "backup", night + timedelta(hours=22))
        # One key a job stays in the store: last night's went when tonight's was claimed.
        assert first.get("nightly:backup:2026-03-02", peek=True) is None
        assert first.get("nightly:backup:2026-03-03", peek=True) is not None
    finally:
        first.storage.flush_all()


def test_jobs_leave_no_results_behind(queue: Huey) -> None:
    """Nothing reads a job's return value: the queue keeps none (a failure's neither, which
    Huey would otherwise keep with its whole traceback, forever), on either backend."""

    @queue.task()
    def answer() -> int:
        return 42

    @queue.task()
    def fail() -> None:
        raise RuntimeError("a failing job")

    answer()
    fail()
    while (task := queue.dequeue()) is not None:
        try:
            queue.execute(task)
        except Exception:  # noqa: BLE001 - the failing job; huey re-raises in execute
            pass
    assert queue.storage.result_store_size() == 0
    assert queue.pending_count() == 0
