"""Background tasks: app context, after the response, failures, waiting, on uvicorn."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, current_app, g, has_request_context, request
from helpers import Events, wait_for

import flask_asgi


def build_app() -> tuple[Flask, flask_asgi.ASGI, Events]:
    app = Flask("background_app")
    app.config["FLASK_ASGI_SHUTDOWN_TIMEOUT"] = 0.5
    asgi = flask_asgi.ASGI(app)
    record = Events()

    async def async_job(tag: str) -> None:
        await asyncio.sleep(0.05)
        record.add(
            (tag, "async", current_app.name, g.get("user"), has_request_context(), "loop-ok")
        )

    def sync_job(tag: str, *, suffix: str = "") -> None:
        awaited = flask_asgi.await_(asyncio.sleep(0, result="awaited"))  # worker thread
        thread = threading.current_thread().name.rsplit("_", 1)[0]
        record.add((tag + suffix, "sync", current_app.name, g.get("user"), thread, awaited))

    @app.get("/async-view")
    async def async_view() -> str:
        g.user = "ann"
        asgi.add_background_task(async_job, "a1")
        flask_asgi.add_background_task(sync_job, "a2", suffix="!")  # current_app's
        return "ok"

    @app.get("/sync-view")
    def sync_view() -> str:
        g.user = "bob"
        asgi.add_background_task(async_job, "s1")
        asgi.add_background_task(sync_job, "s2")
        return "ok"

    return app, asgi, record


EXPECTED = {
    ("a1", "async", "background_app", "ann", False, "loop-ok"),
    ("a2!", "sync", "background_app", "ann", "flask-asgi-worker", "awaited"),
    ("s1", "async", "background_app", "bob", False, "loop-ok"),
    ("s2", "sync", "background_app", "bob", "flask-asgi-worker", "awaited"),
}


def test_sync_test_client() -> None:
    app, asgi, record = build_app()
    client = app.test_client()
    assert client.get("/async-view").text == "ok"
    assert client.get("/sync-view").text == "ok"
    assert asgi.wait_background_tasks(timeout=10) is True
    assert set(record.items) == EXPECTED


async def test_async_test_client() -> None:
    app, asgi, record = build_app()
    async with asgi.test_client() as client:
        assert (await client.get("/async-view")).text == "ok"
        assert (await client.get("/sync-view")).text == "ok"
    assert await asgi.wait_background_tasks(timeout=10) is True
    assert set(record.items) == EXPECTED


def test_live_server_and_cross_loop_wait(live_server: Any) -> None:
    app, asgi, record = build_app()
    loops: dict[str, Any] = {}

    @asgi.before_serving
    async def remember_loop() -> None:
        loops["server"] = asyncio.get_running_loop()

    @app.get("/loop")
    async def loop_view() -> str:
        async def job() -> None:
            loops["job"] = asyncio.get_running_loop()

        asgi.add_background_task(job)
        return "ok"

    base = live_server(asgi)
    assert httpx.get(base + "/async-view").text == "ok"
    assert httpx.get(base + "/sync-view").text == "ok"
    assert httpx.get(base + "/loop").text == "ok"
    # The tasks live on uvicorn's loop; this thread waits through the background loop.
    assert asgi.wait_background_tasks(timeout=10) is True
    assert set(record.items) == EXPECTED
    assert loops["job"] is loops["server"]


def test_task_starts_after_the_response_is_sent() -> None:
    app, asgi, record = build_app()
    release = threading.Event()

    async def job() -> None:
        record.add("job ran")

    @app.get("/stream")
    async def stream() -> Any:
        asgi.add_background_task(job)

        async def body() -> AsyncIterator[str]:
            yield "first;"
            while not release.is_set():
                await asyncio.sleep(0.01)
            yield "last;"

        return flask_asgi.stream(body())

    response = app.test_client().get("/stream", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"first;"
    time.sleep(0.2)  # the view has returned long ago; the response is still going
    assert "job ran" not in record
    release.set()
    assert b"".join(chunks) == b"last;"
    response.close()
    assert asgi.wait_background_tasks(timeout=10) is True
    assert record.items == ["job ran"]


def test_task_added_while_streaming_starts_at_the_end() -> None:
    app, asgi, record = build_app()

    async def job(n: int) -> None:
        record.add(("job", n, record.items.count("chunk")))

    @app.get("/stream")
    async def stream() -> Any:
        async def body() -> AsyncIterator[str]:
            for n in range(3):
                asgi.add_background_task(job, n)  # request context kept by stream()
                record.add("chunk")
                yield f"{request.path} {n};"
                await asyncio.sleep(0.02)

        return flask_asgi.stream(body())

    assert app.test_client().get("/stream").text == "/stream 0;/stream 1;/stream 2;"
    assert asgi.wait_background_tasks(timeout=10) is True
    assert sorted(i for i in record.items if i != "chunk") == [
        ("job", 0, 3),
        ("job", 1, 3),
        ("job", 2, 3),
    ]


def test_task_from_a_cancelled_view_still_runs(live_server: Any) -> None:
    app, asgi, record = build_app()

    async def job() -> None:
        record.add("job ran")

    @app.get("/leave")
    async def leave() -> str:
        asgi.add_background_task(job)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record.add("view cancelled")
            raise
        return "never"

    base = live_server(asgi)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(base + "/leave", timeout=0.5)  # the client gives up and disconnects
    assert wait_for(lambda: "view cancelled" in record)
    assert wait_for(lambda: "job ran" in record), record.items


def test_failures_are_logged_once_and_signalled(caplog: pytest.LogCaptureFixture) -> None:
    app, asgi, record = build_app()
    received: list[tuple[Any, ...]] = []

    async def broken_async(n: int) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"async {n}")

    def broken_sync() -> None:
        raise KeyError("sync")

    def on_failure(sender: Flask, exception: BaseException, task: asyncio.Task[Any]) -> None:
        # Receivers run in the task's app context and may await.
        name = flask_asgi.await_(asyncio.sleep(0, result=current_app.name))
        received.append((sender, repr(exception), isinstance(task, asyncio.Task), name))

    @app.get("/fail")
    async def fail() -> str:
        asgi.add_background_task(broken_async, 1)
        asgi.add_background_task(broken_sync)
        return "ok"

    flask_asgi.background_task_failed.connect(on_failure)
    try:
        with caplog.at_level(logging.ERROR, logger="flask_asgi"):
            assert app.test_client().get("/fail").text == "ok"
            assert asgi.wait_background_tasks(timeout=10) is True
    finally:
        flask_asgi.background_task_failed.disconnect(on_failure)
    assert sorted(received, key=repr) == sorted(
        [
            (app, "ValueError('async 1')", True, "background_app"),
            (app, "KeyError('sync')", True, "background_app"),
        ],
        key=repr,
    )
    failures = [r for r in caplog.records if r.name == "flask_asgi"]
    assert len(failures) == 2
    messages = sorted(r.getMessage() for r in failures)
    assert "broken_async(1) failed" in messages[0] and "broken_sync() failed" in messages[1]
    assert all(r.exc_info is not None for r in failures)


def test_outside_a_request() -> None:
    """From a plain thread (no server, no request): a fresh app context, at once, on the
    background loop."""
    app, asgi, record = build_app()
    started = threading.Event()

    async def job() -> None:
        started.set()
        record.add(("ran", current_app.name, g.get("user"), has_request_context()))

    asgi.add_background_task(job)
    assert started.wait(10)
    assert asgi.wait_background_tasks(timeout=10) is True
    assert record.items == [("ran", "background_app", None, False)]

    with app.app_context():  # an app context that is not a request: g is copied
        g.user = "cli"
        asgi.add_background_task(lambda: record.add(("sync", g.user)))
    assert asgi.wait_background_tasks(timeout=10) is True
    assert ("sync", "cli") in record


def test_from_before_serving_runs_on_the_serving_loop() -> None:
    app, asgi, record = build_app()

    async def job() -> None:
        record.add(("job loop", asyncio.get_running_loop()))

    @asgi.before_serving
    async def start() -> None:
        record.add(("serving loop", asyncio.get_running_loop()))
        asgi.add_background_task(job)

    with asgi.serving():
        assert asgi.wait_background_tasks(timeout=10) is True
    loops = dict(record.items)
    assert loops["job loop"] is loops["serving loop"]


def test_wait_timeout_returns_false() -> None:
    app, asgi, record = build_app()
    stop = threading.Event()

    async def slow() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)

    asgi.add_background_task(slow)
    assert asgi.wait_background_tasks(timeout=0.1) is False
    stop.set()
    assert asgi.wait_background_tasks(timeout=10) is True


def test_a_coroutine_object_is_refused(app: Flask, asgi: flask_asgi.ASGI) -> None:
    async def job() -> None:
        pass

    coroutine = job()
    with pytest.raises(TypeError, match="not a coroutine"):
        asgi.add_background_task(coroutine)  # type: ignore[arg-type]
    assert coroutine.cr_frame is None  # closed: no "never awaited" warning
    with pytest.raises(TypeError):
        asgi.add_background_task("not callable")  # type: ignore[arg-type]


def test_teardown_appcontext_runs_per_task() -> None:
    app, asgi, record = build_app()

    @app.teardown_appcontext
    def teardown(error: BaseException | None) -> None:
        if g.get("task"):
            record.add(("teardown", g.task, type(error).__name__ if error else None))

    async def ok() -> None:
        g.task = "ok"

    def broken() -> None:
        g.task = "broken"
        raise RuntimeError("x")

    with app.app_context():
        asgi.add_background_task(ok)
        asgi.add_background_task(broken)
    assert asgi.wait_background_tasks(timeout=10) is True
    assert ("teardown", "ok", None) in record
    assert ("teardown", "broken", "RuntimeError") in record


def test_wsgi_mode(app: Flask, asgi: flask_asgi.ASGI) -> None:
    """Under a WSGI server (app.wsgi_app called directly) tasks use the background loop."""
    from werkzeug.test import Client

    seen: list[str] = []

    @app.get("/")
    def index() -> str:
        asgi.add_background_task(lambda: seen.append("ran"))
        return "ok"

    def iter_app(environ: Any, start_response: Any) -> Iterator[bytes]:
        return app.wsgi_app(environ, start_response)  # type: ignore[no-any-return]

    # buffered: the client closes the response, as a WSGI server does once it is sent
    assert Client(iter_app).get("/", buffered=True).text == "ok"
    assert asgi.wait_background_tasks(timeout=10) is True
    assert seen == ["ran"]
