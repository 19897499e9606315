"""The threads of their own that upgraded WSGI connections (Flask-SocketIO's threading
mode, simple-websocket) and Socket.IO long-polls run in (issue 19): every job runs at once
in its own thread, the caller (the event loop) never starts a thread itself, and a thread
whose job ended serves the next job before it ends."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flask_asgi.ground.pools import ConnectionThreads


def test_every_job_runs_at_once_and_the_caller_starts_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Thread.start()`` waits until the new thread runs: with a thousand threads wanting
    the GIL, one start held the event loop for 0.5 s. The caller only queues the job."""
    threads = ConnectionThreads()
    starters: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        starters.append(threading.current_thread().name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    release = threading.Event()
    arrived = threading.Semaphore(0)
    seen: set[int] = set()

    def job(n: int) -> int:
        seen.add(threading.get_ident())
        arrived.release()
        assert release.wait(20)
        return n

    futures = [threads.submit(job, n) for n in range(30)]
    for _ in range(30):  # all 30 run together: none waits for another to end
        assert arrived.acquire(timeout=20)
    release.set()
    assert [f.result(timeout=20) for f in futures] == list(range(30))
    assert len(seen) == 30
    me = threading.current_thread().name
    assert starters.count(me) == 1  # the starter thread, once; it started the 30
    assert starters.count("flask-asgi-connection-starter") == 30


def test_idle_threads_serve_the_next_jobs_then_end() -> None:
    threads = ConnectionThreads()
    threads.IDLE_SECONDS = 2.0
    together = threading.Barrier(5)

    def job() -> threading.Thread:
        together.wait(20)  # five threads, one job each
        return threading.current_thread()

    first = [f.result(timeout=20) for f in [threads.submit(job) for _ in range(5)]]
    assert len(set(first)) == 5
    # Those five threads are idle now: five more jobs, one after the other, need no new one.
    later = [threads.submit(threading.current_thread).result(timeout=20) for _ in range(5)]
    assert set(later) <= set(first)
    # A job's error and keyword arguments reach its future.
    failing = threads.submit(int, "x", base=10)
    with pytest.raises(ValueError):
        failing.result(timeout=20)
    used = {*first, *later}
    for thread in used:  # no job for IDLE_SECONDS: each thread ends
        thread.join(20)
    assert not any(thread.is_alive() for thread in used)
    # ... and a job after that gets a new thread.
    assert threads.submit(threading.current_thread).result(timeout=20) not in used


def test_a_cancelled_job_is_skipped() -> None:
    threads = ConnectionThreads()
    gate = threading.Event()
    ran: list[Any] = []
    blockers = [threads.submit(gate.wait, 20) for _ in range(2)]
    queued = threads.submit(ran.append, 1)
    # The job may already run in its own thread; if not, cancelling it skips it.
    cancelled = queued.cancel()
    gate.set()
    for f in blockers:
        assert f.result(timeout=20) is True
    threads.submit(lambda: None).result(timeout=20)
    assert ran == ([] if cancelled else [1])
