"""Shared fixtures: apps, uvicorn in a thread, and `flask ... serve` subprocesses."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import ROOT, CLIServer, RedisServer, free_port, run_live

import flask_asgi


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """``base_url = live_server(asgi)``: uvicorn serves ``asgi`` until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda asgi, **options: stack.enter_context(run_live(asgi, **options))


@pytest.fixture
def cli_server() -> Iterator[Callable[..., CLIServer]]:
    """``server = cli_server("examples/x.py")``: a real ``flask serve`` process, stopped at the
    end of the test. ``wait=False`` returns before the server is up (for failing starts);
    ``flask_options`` go before ``serve`` (``["--debug"]``)."""
    servers: list[CLIServer] = []

    def start(
        target: str,
        cwd: Path = ROOT,
        extra: list[str] | None = None,
        wait: bool = True,
        flask_options: list[str] | None = None,
    ) -> CLIServer:
        server = CLIServer(target, free_port(), cwd, extra or [], flask_options or [])
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
        if server.proc.stdout is not None:
            server.proc.stdout.close()


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def asgi(app: Flask) -> flask_asgi.ASGI:
    return flask_asgi.ASGI(app)


@pytest.fixture
def client(app: Flask, asgi: flask_asgi.ASGI) -> Any:
    return app.test_client()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(binary)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
