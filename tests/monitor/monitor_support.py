"""Helpers for the service-monitor tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from helpers import ROOT, free_port

sys.path.insert(0, str(ROOT))  # `examples.monitor` (the CLI imports it as `monitor`)

import flask_asgi  # noqa: E402
from examples.monitor import state  # noqa: E402
from examples.monitor.store import Store  # noqa: E402

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def run(coro: Any) -> Any:
    """Run a coroutine on the loop the sync test client and ``serving()`` use."""
    return flask_asgi.await_(coro)


def db(app: Any) -> Store:
    return state(app).require_store()


def add_user(
    app: Any,
    email: str = "ada@example.com",
    password: str = "correct horse",
) -> Any:
    from werkzeug.security import generate_password_hash

    create = db(app).create_user(email, generate_password_hash(password))
    return run(create)


def prepare_user(
    database_url: str, email: str = "ada@example.com", password: str = "correct horse"
) -> None:
    """Before a live server starts: create the schema and a user with a short-lived engine."""
    from werkzeug.security import generate_password_hash

    async def create() -> None:
        store = Store(database_url)
        try:
            await store.create_schema()
            await store.create_user(email, generate_password_hash(password))
        finally:
            await store.dispose()

    asyncio.run(create())


def api_login(client: Any, email: str = "ada@example.com", password: str = "correct horse") -> None:
    response = client.post("/api/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text


# -- a controllable upstream on loopback ------------------------------------------------


class Upstream:
    """A real aiohttp server in a thread: ``status`` and ``delay`` change its answers."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.hits = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="upstream", daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=f"status {self.status}")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop.run_until_complete(main())
        pending = asyncio.all_tasks(self._loop)  # requests still sleeping in `delay`
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def __enter__(self) -> Upstream:
        self._thread.start()
        assert self._ready.wait(10), "upstream did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stop is not None
        self.delay = 0.0
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy (generous timeouts, no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
