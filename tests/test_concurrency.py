"""Async views share the server loop (no thread per request); sync views use the worker pool."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from flask import Flask, current_app
from helpers import EXAMPLES, http_scope, run_live

import flask_asgi

UNLIMITED = httpx.Limits(max_connections=None, max_keepalive_connections=None)


async def fire(base_url: str, path: str, count: int, clients: int = 20) -> list[httpx.Response]:
    """``count`` concurrent GETs, spread over several httpx clients (one client's pool is
    slow with hundreds of connections)."""
    pool = [
        httpx.AsyncClient(base_url=base_url, limits=UNLIMITED, timeout=60) for _ in range(clients)
    ]
    try:
        return await asyncio.gather(*(pool[i % clients].get(path) for i in range(count)))
    finally:
        for client in pool:
            await client.aclose()


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_500_concurrent_async_requests_share_one_thread(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    thread_counts: list[int] = []
    view_threads: set[str] = set()

    @app.get("/sleep")
    async def sleep() -> str:
        await asyncio.sleep(1)
        thread_counts.append(threading.active_count())
        view_threads.add(threading.current_thread().name)
        return "slept"

    baseline = threading.active_count()
    base = live_server(asgi)
    started = time.monotonic()
    responses = asyncio.run(fire(base, "/sleep", 500))
    elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [200] * 500
    assert {r.text for r in responses} == {"slept"}
    assert elapsed < 10, f"500 x 1 s sleeps took {elapsed:.1f} s: requests were serialised"
    assert len(thread_counts) == 500
    # Only the uvicorn thread was added: no thread per request, no worker pool.
    assert view_threads == {"uvicorn-test-server"}
    assert max(thread_counts) <= baseline + 2, (baseline, max(thread_counts))
    assert max(thread_counts) <= 12


def test_seed_example_flask_hello_200_concurrent(live_server: Any) -> None:
    module = load_example("flask_hello")
    asgi = flask_asgi.ASGI(module.app)
    baseline = threading.active_count()
    base = live_server(asgi)
    samples: list[int] = []

    async def run() -> list[httpx.Response]:
        async def sample() -> None:
            while True:
                samples.append(threading.active_count())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            return await fire(base, "/hello", 200)
        finally:
            sampler.cancel()

    started = time.monotonic()
    responses = asyncio.run(run())
    elapsed = time.monotonic() - started

    assert {r.status_code for r in responses} == {200}
    assert {r.text for r in responses} == {"Hello, World!"}
    assert elapsed < 20, f"200 x 2 s took {elapsed:.1f} s (serial would be 400 s)"
    assert samples and max(samples) <= baseline + 2


def make_loop_bound_app(upstream: str) -> tuple[Flask, flask_asgi.ASGI, dict[str, Any]]:
    """An app whose before_serving creates loop-bound resources that every request uses."""
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    state: dict[str, Any] = {"errors": [], "max_inside": 0, "inside": 0}

    @asgi.before_serving
    async def open_resources() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["http"] = httpx.AsyncClient(base_url=upstream)  # keeps pooled connections
        state["lock"] = asyncio.Lock()
        tokens: asyncio.Queue[int] = asyncio.Queue()
        for token in range(2):
            tokens.put_nowait(token)
        state["tokens"] = tokens
        current_app.config["RESOURCES_OPEN"] = True

    @asgi.after_serving
    async def close_resources() -> None:
        await state["http"].aclose()

    @app.get("/use")
    async def use() -> dict[str, Any]:
        assert asyncio.get_running_loop() is state["loop"]
        token = await state["tokens"].get()  # contended: binds the queue to the loop
        try:
            async with state["lock"]:  # contended: binds the lock to the loop
                state["inside"] += 1
                state["max_inside"] = max(state["max_inside"], state["inside"])
                await asyncio.sleep(0.001)
                state["inside"] -= 1
            upstream_response = await state["http"].get("/value")
        finally:
            state["tokens"].put_nowait(token)
        return {"upstream": upstream_response.text}

    @app.errorhandler(Exception)
    def record(error: Exception) -> tuple[str, int]:
        state["errors"].append(repr(error))
        return repr(error), 500

    return app, asgi, state


def upstream_asgi() -> flask_asgi.ASGI:
    app = Flask("upstream")

    @app.get("/value")
    async def value() -> str:
        return "42"

    return flask_asgi.ASGI(app)


def test_loop_bound_resources_on_real_server(live_server: Any) -> None:
    upstream = live_server(upstream_asgi())
    app, asgi, state = make_loop_bound_app(upstream)
    base = live_server(asgi)

    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(20):
            response = client.get("/use")
            assert response.status_code == 200, response.text
            assert response.json() == {"upstream": "42"}
    responses = asyncio.run(fire(base, "/use", 100, clients=5))
    assert [r.status_code for r in responses] == [200] * 100, responses[0].text
    assert state["errors"] == []
    assert state["max_inside"] == 1  # the lock really excluded
    assert app.config["RESOURCES_OPEN"] is True


def test_loop_bound_resources_via_sync_test_client(live_server: Any) -> None:
    upstream = live_server(upstream_asgi())
    app, asgi, state = make_loop_bound_app(upstream)

    with asgi.serving():
        client = app.test_client()
        for _ in range(20):
            response = client.get("/use")
            assert response.status_code == 200, response.text
            assert response.json == {"upstream": "42"}

        def one(_: int) -> int:
            return app.test_client().get("/use").status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(80)))
        assert codes == [200] * 80
        # Same again, after the concurrent burst: nothing got bound to a dead loop.
        assert client.get("/use").json == {"upstream": "42"}
    assert state["errors"] == []
    assert state["http"].is_closed  # after_serving ran on the same loop


def test_sync_views_in_workers_async_views_on_loop(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/sync-where")
    def sync_where() -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @app.get("/async-where")
    async def async_where() -> dict[str, Any]:
        asyncio.get_running_loop()
        return {"thread": threading.current_thread().name}

    @app.get("/block")
    def block() -> str:
        time.sleep(2)
        return threading.current_thread().name

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    base = live_server(asgi)
    assert httpx.get(base + "/sync-where").json()["thread"].startswith("flask-asgi-worker")
    assert httpx.get(base + "/async-where").json()["thread"] == "uvicorn-test-server"

    async def run() -> tuple[list[httpx.Response], list[float], float]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            started = time.monotonic()
            sleepers = [asyncio.create_task(client.get("/block")) for _ in range(4)]
            await asyncio.sleep(0.3)  # the sleepers are now blocking their workers
            latencies = []
            for _ in range(3):
                t0 = time.monotonic()
                assert (await client.get("/ping")).text == "pong"
                latencies.append(time.monotonic() - t0)
            done = await asyncio.gather(*sleepers)
            return done, latencies, time.monotonic() - started

    done, latencies, total = asyncio.run(run())
    assert all(r.status_code == 200 for r in done)
    assert all(r.text.startswith("flask-asgi-worker") for r in done)
    assert len({r.text for r in done}) == 4  # four different workers at once
    assert max(latencies) < 1.0, latencies  # the loop was not blocked by time.sleep(2)
    assert total < 6  # the 4 sleepers overlapped (serial would be 8 s)


def test_worker_pool_size_is_configurable(live_server: Any) -> None:
    app = Flask(__name__)
    app.config["FLASK_ASGI_THREADS"] = 2
    asgi = flask_asgi.ASGI(app)
    names: set[str] = set()
    lock = threading.Lock()

    @app.get("/block")
    def block() -> str:
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(0.3)
        return "ok"

    base = live_server(asgi)
    responses = asyncio.run(fire(base, "/block", 8, clients=8))
    assert {r.status_code for r in responses} == {200}
    assert len(names) == 2
    assert asgi.executor._max_workers == 2


def test_run_live_helper_stops_server() -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/")
    async def index() -> str:
        return "up"

    with run_live(asgi) as base:
        assert httpx.get(base + "/").text == "up"
    try:
        httpx.get(base + "/", timeout=1)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("server still answering after shutdown")


async def test_async_test_client_requests_overlap() -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/sleep")
    async def sleep() -> str:
        await asyncio.sleep(0.5)
        return "async"

    @app.get("/sync-sleep")
    def sync_sleep() -> str:
        time.sleep(0.5)
        return "sync"

    async with asgi.test_client() as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.get("/sleep") for _ in range(20)),
            *(client.get("/sync-sleep") for _ in range(4)),
        )
        elapsed = time.monotonic() - started
    assert [r.text for r in responses] == ["async"] * 20 + ["sync"] * 4
    assert elapsed < 5  # serial: 12 s


def test_1000_requests_wait_together_on_one_loop() -> None:
    # Straight through the ASGI callable (no client to be the bottleneck): 1,000 requests
    # each awaiting a 1 s sleep are all in flight at once, on the loop's thread only.
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    in_flight = 0
    peak = 0
    threads: set[str] = set()

    @app.get("/sleep")
    async def sleep() -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        threads.add(threading.current_thread().name)
        await asyncio.sleep(1)
        in_flight -= 1
        return "slept"

    async def one() -> int:
        scope = http_scope("/sleep")
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(3600)  # no disconnect while the request runs
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asgi(scope, receive, send)
        return int(sent[0]["status"])

    async def run() -> tuple[list[int], int]:
        baseline = threading.active_count()
        statuses = await asyncio.gather(*(one() for _ in range(1000)))
        return list(statuses), threading.active_count() - baseline

    started = time.monotonic()
    statuses, new_threads = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert statuses == [200] * 1000
    assert peak == 1000, "the requests did not all wait at the same time"
    assert elapsed < 8, f"1000 x 1 s sleeps took {elapsed:.1f} s"
    assert threads == {threading.current_thread().name}  # all on the loop's thread
    assert new_threads == 0
