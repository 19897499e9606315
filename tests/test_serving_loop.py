"""The test clients serve the app on one loop for the whole session, as a server does.

``app.test_client()``, ``asgi.test_client()``, their WebSockets and ``asgi.serving()`` all
run the app on the serving loop (the shared background loop), whatever loop the test runs
on: a loop-bound object the app made once keeps working across tests and clients. The
tests are marked ``asyncio`` so that they also run under pytest-asyncio's strict mode.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from flask import Flask

import flask_asgi
from flask_asgi.testing import on_serving_loop, serving_loop

#: Made once, bound to the first loop that uses it, as an import-time client would be.
_LOOP_BOUND: dict[str, asyncio.Queue[int]] = {}


def bound_queue() -> asyncio.Queue[int]:
    queue = _LOOP_BOUND.get("queue")
    if queue is None:
        queue = _LOOP_BOUND["queue"] = asyncio.Queue()
    return queue


def build() -> tuple[Flask, flask_asgi.ASGI]:
    app = Flask(__name__)
    app.config["TESTING"] = True
    asgi = flask_asgi.ASGI(app)
    seen: list[Any] = []
    app.extensions["seen"] = seen

    @asgi.before_serving
    async def open_resources() -> None:
        app.extensions["opened_on"] = asyncio.get_running_loop()

    @app.get("/loop")
    async def loop() -> dict[str, Any]:
        # A queue bound to one loop: get() on another loop fails ("bound to a different
        # event loop") once it has waited on the first.
        queue = bound_queue()
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.put_nowait(1)
        await waiter
        running = asyncio.get_running_loop()
        return {
            "serving": running is serving_loop(),
            "lifespan_loop": running is app.extensions.get("opened_on", running),
        }

    @app.get("/interrupt")
    async def interrupt() -> str:
        raise KeyboardInterrupt

    @app.route("/ws", websocket=True)
    async def ws() -> None:
        on = asyncio.get_running_loop() is serving_loop()
        await flask_asgi.websocket.send("serving" if on else "other")

    return app, asgi


@pytest.mark.asyncio
async def test_async_client_runs_the_app_on_the_serving_loop() -> None:
    app, asgi = build()
    assert asyncio.get_running_loop() is not serving_loop()
    async with asgi.test_client(lifespan=True) as client:
        for _ in range(2):
            response = await client.get("/loop")
            assert response.json == {"serving": True, "lifespan_loop": True}
    assert app.extensions["opened_on"] is serving_loop()


@pytest.mark.asyncio
async def test_a_second_async_test_uses_the_same_loop() -> None:
    # pytest-asyncio gave this test a new loop; the app's loop-bound queue still works.
    app, asgi = build()
    async with asgi.test_client() as client:
        assert (await client.get("/loop")).json["serving"] is True


def test_sync_client_and_sync_serving_use_the_same_loop() -> None:
    app, asgi = build()
    with asgi.serving():
        assert app.test_client().get("/loop").json == {"serving": True, "lifespan_loop": True}


@pytest.mark.asyncio
async def test_sync_client_and_serving_in_an_async_test() -> None:
    app, asgi = build()
    with asgi.serving():  # blocks the test's loop while it waits; the app is not on it
        assert app.test_client().get("/loop").json == {"serving": True, "lifespan_loop": True}
    async with asgi.serving():
        assert app.test_client().get("/loop").json["serving"] is True
        async with asgi.test_client() as client:
            assert (await client.get("/loop")).json["serving"] is True


@pytest.mark.asyncio
async def test_concurrent_requests_from_the_test_loop() -> None:
    app, asgi = build()
    async with asgi.test_client() as client:
        responses = await asyncio.gather(*(client.get("/loop") for _ in range(20)))
    assert all(r.json["serving"] for r in responses)


@pytest.mark.asyncio
async def test_websockets_run_on_the_serving_loop() -> None:
    app, asgi = build()
    async with asgi.test_client() as client, client.websocket("/ws") as socket:
        assert await socket.receive() == "serving"
    with app.test_client().websocket("/ws") as socket:
        assert socket.receive() == "serving"


@pytest.mark.asyncio
async def test_on_the_serving_loop_already_the_client_runs_inline() -> None:
    app, asgi = build()

    async def there() -> Any:
        assert asyncio.get_running_loop() is serving_loop()
        async with asgi.test_client(lifespan=True) as client:
            return (await client.get("/loop")).json

    assert await on_serving_loop(there()) == {"serving": True, "lifespan_loop": True}


@pytest.mark.asyncio
async def test_keyboard_interrupt_reaches_the_test_and_the_loop_lives_on() -> None:
    app, asgi = build()
    async with asgi.test_client() as client:
        with pytest.raises(KeyboardInterrupt):
            await client.get("/interrupt")
        assert serving_loop().is_running()
        assert (await client.get("/loop")).json["serving"] is True


async def _one_request() -> tuple[weakref.ref[Any], weakref.ref[Flask]]:
    app, asgi = build()
    async with asgi.test_client() as client:
        response = await client.get("/loop")
        assert response.json["serving"] is True
    return weakref.ref(response), weakref.ref(app)


@pytest.mark.asyncio
async def test_the_serving_loop_keeps_no_response_or_app_alive() -> None:
    # A pooled greenlet on the serving loop keeps its last result until its next job:
    # the response must not be that result, or it would outlive the test with its app.
    await _one_request()
    refs = await _one_request()
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
