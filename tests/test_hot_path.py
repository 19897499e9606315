"""What the lean request path must keep doing: a prefetched body, a receive left pending,
the process's in-flight count over several apps, and Flask's ``ensure_sync`` answers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from typing import Any

import pytest
from flask import Flask, request
from helpers import http_scope

from flask_asgi import ASGI
from flask_asgi.ground.counters import counters

BODY = b'{"n": 1}'
JSON = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


def echo_app(kept: list[Any] | None = None) -> tuple[Flask, ASGI]:
    app = Flask(__name__)

    @app.post("/echo")
    async def echo() -> Any:
        return request.get_json()

    @app.post("/ignore")
    async def ignore() -> str:
        if kept is not None:
            kept.append(request.environ)  # keeps wsgi.input (and what it holds) alive
        return "not read"

    return app, ASGI(app)


async def call(asgi: ASGI, path: str, receive: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(asgi(http_scope(path, "POST", JSON), receive, send), 10)
    return sent


async def test_a_body_that_has_arrived_is_read_once() -> None:
    _, asgi = echo_app()
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.sleep(3600)  # a second receive would wait for good
        return {"type": "http.request", "body": BODY, "more_body": False}

    sent = await call(asgi, "/echo", receive)
    assert sent[0]["status"] == 200 and sent[1]["body"].strip() == BODY.replace(b" ", b"")
    assert calls == 1


async def test_a_body_still_on_its_way_is_waited_for_by_the_read() -> None:
    _, asgi = echo_app()
    arrived = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await arrived.wait()
        return {"type": "http.request", "body": BODY, "more_body": False}

    task = asyncio.create_task(call(asgi, "/echo", receive))
    await asyncio.sleep(0.05)
    assert not task.done()  # the view waits in its read, not the handler before it
    arrived.set()
    sent = await task
    assert sent[0]["status"] == 200 and b'"n":1' in sent[1]["body"].replace(b" ", b"")


async def test_a_receive_nobody_read_is_closed_when_the_request_ends() -> None:
    kept: list[Any] = []
    _, asgi = echo_app(kept)
    closed = asyncio.Event()

    async def receive() -> dict[str, Any]:
        try:
            await asyncio.sleep(3600)
        finally:
            closed.set()
        raise AssertionError("unreachable")

    sent = await call(asgi, "/ignore", receive)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"not read"
    assert closed.is_set()  # the receive the handler started did not outlive the request


async def test_a_declared_body_over_max_content_length_is_not_taken() -> None:
    app, asgi = echo_app()
    app.config["MAX_CONTENT_LENGTH"] = 4
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": BODY, "more_body": False}

    sent = await call(asgi, "/echo", receive)
    assert sent[0]["status"] == 413
    assert calls == 0  # refused from the header alone


async def test_in_flight_counts_every_app_of_the_process() -> None:
    gate = asyncio.Event()
    asgis = []
    for _ in range(2):
        app = Flask(__name__)

        @app.get("/wait")
        async def wait() -> str:
            await gate.wait()
            return "ok"

        asgis.append(ASGI(app))
    before = counters.in_flight

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    tasks = [
        asyncio.create_task(asgi(http_scope("/wait"), receive, send))
        for asgi in asgis
        for _ in range(3)
    ]
    await asyncio.sleep(0.05)
    assert counters.in_flight - before == 6
    assert counters.snapshot()["in_flight"] - before == 6
    gate.set()
    await asyncio.gather(*tasks)
    assert counters.in_flight == before


async def test_max_requests_counts_requests_of_the_app_in_flight() -> None:
    app = Flask(__name__)
    app.config["FLASK_ASGI_MAX_REQUESTS"] = counters.in_flight + 2
    gate = asyncio.Event()

    @app.get("/wait")
    async def wait() -> str:
        await gate.wait()
        return "ok"

    asgi = ASGI(app)
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    tasks = [asyncio.create_task(asgi(http_scope("/wait"), receive, send)) for _ in range(2)]
    await asyncio.sleep(0.05)
    await asgi(http_scope("/wait"), receive, send)  # the third: refused at once
    assert statuses == [503]
    gate.set()
    await asyncio.gather(*tasks)
    assert statuses == [503, 200, 200]


def test_ensure_sync_keeps_its_answer_per_function() -> None:
    app = Flask(__name__)
    ASGI(app)

    async def view() -> str:
        return "x"

    def sync_view() -> str:
        return "y"

    assert app.ensure_sync(view) is app.ensure_sync(view)
    assert app.ensure_sync(sync_view) is sync_view
    with app.test_request_context():
        assert app.ensure_sync(view)() == "x"


def test_a_new_async_to_sync_is_used_at_once() -> None:
    app = Flask(__name__)
    ASGI(app)

    async def view() -> str:
        return "x"

    app.ensure_sync(view)
    app.async_to_sync = lambda func: lambda: "replaced"  # type: ignore[method-assign]
    assert app.ensure_sync(view)() == "replaced"


def test_an_overridden_ensure_sync_is_left_alone() -> None:
    class Custom(Flask):
        def ensure_sync(self, func: Any) -> Any:
            return lambda *a, **k: "custom"

    app = Custom(__name__)
    ASGI(app)

    async def view() -> str:
        return "x"

    assert "ensure_sync" not in vars(app)
    assert app.ensure_sync(view)() == "custom"


def test_the_app_is_freed_at_zero_references() -> None:
    app = Flask(__name__)

    @app.get("/")
    async def index() -> str:
        return "ok"

    asgi = ASGI(app)
    assert app.ensure_sync(index) is app.ensure_sync(index)  # the cache holds a function
    ref = weakref.ref(app)
    gc.disable()
    try:
        del app, asgi, index
        # By reference counting alone, as Flask's own suite checks. (Once seen failing in a
        # full run under load, not reproduced: the message names what held the app.)
        held = ref()
        assert held is None, [type(r).__name__ for r in gc.get_referrers(held)]
    finally:
        gc.enable()


async def test_a_body_timeout_names_the_request(caplog: Any) -> None:
    app, asgi = echo_app()
    app.config["FLASK_ASGI_BODY_TIMEOUT"] = 0.1

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # the body never comes
        raise AssertionError("unreachable")

    with caplog.at_level("WARNING", logger="flask_asgi"):
        sent = await call(asgi, "/echo", receive)
    assert sent[0]["status"] == 408
    assert any(
        "FLASK_ASGI_BODY_TIMEOUT" in r.getMessage() and "POST /echo" in r.getMessage()
        for r in caplog.records
    )


async def test_a_receive_that_is_no_coroutine_function_is_left_to_the_app() -> None:
    # granian's receive makes an awaitable that may start receiving when it is made: it is
    # not called before the app reads the body.
    _, asgi = echo_app()
    made = 0

    class Receive:
        def __call__(self) -> Any:
            nonlocal made
            made += 1
            return self.message()

        async def message(self) -> dict[str, Any]:
            return {"type": "http.request", "body": BODY, "more_body": False}

    receive = Receive()
    assert (await call(asgi, "/ignore", receive))[0]["status"] == 200
    assert made == 0
    sent = await call(asgi, "/echo", receive)
    assert sent[0]["status"] == 200 and made == 1


async def test_a_worker_job_whose_caller_was_cancelled_counts_until_it_ends() -> None:
    import threading

    from flask_asgi.ground.pools import worker_pool
    from flask_asgi.ground.worker_calls import run_in_worker

    pool: Any = worker_pool(3)
    release = threading.Event()
    started = threading.Event()

    def job() -> str:
        started.set()
        release.wait(10)
        return "done"

    before = pool.pending
    caller = asyncio.create_task(run_in_worker(pool, job))
    assert await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    assert pool.pending - before == 1  # its thread is still busy with the job
    release.set()
    for _ in range(200):
        if pool.pending == before:
            break
        await asyncio.sleep(0.01)
    assert pool.pending == before

    # A job cancelled before it starts is skipped and stops counting at once.
    blockers = [asyncio.create_task(run_in_worker(pool, release.wait, 10)) for _ in range(3)]
    release.clear()
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(run_in_worker(pool, job))
    await asyncio.sleep(0.05)
    queued.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await queued
    assert pool.pending - before == 3
    release.set()
    await asyncio.gather(*blockers)
    assert pool.pending == before


async def test_worker_jobs_reuse_idle_threads_and_all_outcomes_come_back() -> None:
    import threading

    from flask_asgi.ground.pools import WorkerPool
    from flask_asgi.ground.worker_calls import run_in_worker

    pool = WorkerPool(max_workers=8, thread_name_prefix="test-hop")
    try:
        # One job at a time: idle threads take them, no new thread per job (a thread
        # counts as idle once it has handed its outcome back: two may take turns).
        names = [await run_in_worker(pool, lambda: threading.current_thread().name)]
        for _ in range(50):
            names.append(await run_in_worker(pool, lambda: threading.current_thread().name))
        assert len(set(names)) <= 2 and len(pool._threads) <= 2

        # 400 at once, ending while the loop is busy: each caller gets its own outcome,
        # errors included, however many come back in one wake-up of the loop.
        def job(i: int) -> int:
            if i % 7 == 0:
                raise ValueError(i)
            return i * 2

        outcomes = await asyncio.gather(
            *(run_in_worker(pool, job, i) for i in range(400)), return_exceptions=True
        )
        for i, outcome in enumerate(outcomes):
            if i % 7 == 0:
                assert isinstance(outcome, ValueError) and outcome.args == (i,)
            else:
                assert outcome == i * 2
        assert pool.pending == 0 and len(pool._threads) <= 8
    finally:
        pool.shutdown(wait=True)


# -- entering the request greenlet with a plain call (bridge.enter_greenlet) -------------


async def test_a_job_that_does_not_wait_comes_back_at_once_and_its_greenlet_is_reused() -> None:
    from flask_asgi.ground import bridge

    seen: list[Any] = []

    def job(a: int, b: int, c: int, d: int) -> int:
        seen.append(bridge.getcurrent())
        return a + b + c + d

    assert bridge.enter_greenlet(job, (1, 2, 3, 4)) == 10  # a value, not a Suspended
    assert bridge.enter_greenlet(job, (1, 1, 1, 1)) == 4
    assert type(seen[0]) is bridge.BridgeGreenlet and seen[0] is seen[1]  # back in the pool
    assert seen[0].gr_context is None  # an idle greenlet keeps no request's Context


async def test_a_job_that_waits_is_awaited_through_suspended() -> None:
    from flask_asgi.ground import bridge

    def job(delay: float) -> str:
        bridge.await_(asyncio.sleep(delay))
        return "done"

    outcome = bridge.enter_greenlet(job, (0.01,))
    assert isinstance(outcome, bridge.Suspended)
    assert await outcome == "done"


async def test_a_failing_job_raises_from_enter_greenlet_and_after_a_wait() -> None:
    from flask_asgi.ground import bridge

    def fail(wait: bool) -> None:
        if wait:
            bridge.await_(asyncio.sleep(0))
        raise LookupError("from the job")

    with pytest.raises(LookupError, match="from the job"):
        bridge.enter_greenlet(fail, (False,))
    outcome = bridge.enter_greenlet(fail, (True,))
    assert isinstance(outcome, bridge.Suspended)
    with pytest.raises(LookupError, match="from the job"):
        await outcome


async def test_cancelling_a_waiting_job_reaches_the_view_and_its_cleanup() -> None:
    from flask_asgi.ground import bridge

    cleaned: list[str] = []

    def job() -> None:
        try:
            bridge.await_(asyncio.sleep(3600))
        finally:
            cleaned.append("cleanup")

    async def driver() -> None:
        outcome = bridge.enter_greenlet(job, ())
        assert isinstance(outcome, bridge.Suspended)
        await outcome

    task = asyncio.get_running_loop().create_task(driver())
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled() and cleaned == ["cleanup"]


def test_a_pooled_greenlet_switches_back_to_its_new_driver() -> None:
    """A greenlet used first from the thread's main greenlet, then from inside another
    bridge greenlet (a nested driver), must go back to the one that entered it."""
    from flask_asgi.ground import bridge

    def inner() -> str:
        return "inner"

    def outer() -> str:
        return bridge.enter_greenlet(inner, ())  # type: ignore[return-value]

    assert bridge.enter_greenlet(inner, ()) == "inner"
    assert bridge.enter_greenlet(outer, ()) == "inner"
    assert bridge.enter_greenlet(inner, ()) == "inner"


async def test_a_request_with_nothing_to_undo_skips_end_and_one_with_a_timer_does_not(
    monkeypatch: Any,
) -> None:
    from flask_asgi.protocol import http

    app = Flask(__name__)

    @app.get("/quick")
    async def quick() -> str:
        return "ok"

    asgi = ASGI(app)
    ended: list[Any] = []
    real_end = http._end
    monkeypatch.setattr(http, "_end", lambda exchange: ended.append(real_end(exchange)))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    sent: list[dict[str, Any]] = []
    await asgi(http_scope("/quick"), receive, send)
    assert sent[0]["status"] == 200 and ended == []
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 30  # a timer: it must be cancelled by _end
    await asgi(http_scope("/quick"), receive, send)
    assert sent[2]["status"] == 200 and len(ended) == 1


async def test_a_request_that_waited_leaves_the_watch_schedule_when_it_ends() -> None:
    from flask_asgi.protocol import disconnect_watch

    app = Flask(__name__)

    @app.get("/wait")
    async def wait() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    asgi = ASGI(app)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # never a disconnect
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.gather(*(asgi(http_scope("/wait"), receive, send) for _ in range(5)))
    schedule = disconnect_watch.watch_schedule()
    assert [m["status"] for m in sent if "status" in m] == [200] * 5
    assert not schedule.young and not schedule.old  # each was discarded at its end


def test_an_unhashable_callable_view_is_served() -> None:
    # ensure_sync keeps answers for plain functions only: a callable object may be
    # unhashable (a dataclass with eq=True), and must not reach the cache.
    import dataclasses

    @dataclasses.dataclass
    class Greeting:
        text: str

        def __call__(self) -> str:
            return self.text

    app = Flask(__name__)
    app.add_url_rule("/greet", endpoint="greet", view_func=Greeting("hi"))
    ASGI(app)
    assert app.test_client().get("/greet").text == "hi"
