"""Helpers shared by the tests: free ports, uvicorn in a thread, ``flask serve`` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
VENV_BIN = Path(sys.executable).parent

#: The status of ``flask.redirect(url)``: 302 up to Flask 3.1, 303 from Flask 3.2 on (a
#: change Flask made on purpose; tests expect what the installed Flask does).
REDIRECT = inspect.signature(flask.redirect).parameters["code"].default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_live(asgi: Any, graceful: bool = False, **options: Any) -> Iterator[str]:
    """Serve ``asgi`` on a real uvicorn server in a background thread; yield its base URL.

    ``graceful``: the server ``flask serve`` runs
    (flask_asgi.serving.uvicorn_server.graceful_server)."""
    port = free_port()
    options.setdefault("lifespan", "on")
    options.setdefault("log_level", "warning")
    # Leave logging alone: uvicorn's records then reach the root logger (and caplog).
    options.setdefault("log_config", None)
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, **options)
    sockets = None
    if graceful:
        from flask_asgi.serving.uvicorn_server import graceful_server

        server, sockets = graceful_server(asgi, config)
    else:
        server = uvicorn.Server(config)
    exit_codes: list[Any] = []

    def serve() -> None:
        try:
            server.run(sockets=sockets)
        except SystemExit as exit:  # uvicorn's way to report a failed startup
            exit_codes.append(exit.code)

    thread = threading.Thread(target=serve, name="uvicorn-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            thread.join(5)
            raise RuntimeError(f"uvicorn exited before it started (exit code {exit_codes})")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        assert not thread.is_alive(), "uvicorn did not shut down"


class CLIServer:
    """``flask --app <target> serve`` running as a subprocess."""

    def __init__(
        self, target: str, port: int, cwd: Path, extra: list[str], flask_options: list[str]
    ) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("FLASK_APP", None)
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "flask"), "--app", target, *flask_options, "serve"]
            + ["--port", str(port), *extra],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                httpx.get(self.base_url + "/__ready_probe__", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def output(self) -> str:
        if self.proc.poll() is None:
            self.stop()
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Events:
    """A thread-safe record of what an app under test saw (views, hooks, tasks, threads)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)

    def __contains__(self, item: Any) -> bool:
        with self.lock:
            return item in self.items


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


async def wait_async(event: threading.Event, timeout: float = 10) -> bool:
    """Wait for a thread's ``event`` from async code without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def http_scope(
    path: str = "/", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    """An ASGI ``http`` scope as uvicorn would build it, for calling an app directly."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")] if headers is None else headers,
        "server": ("test", 80),
        "client": ("127.0.0.1", 5000),
    }


class RedisServer:
    """A throwaway ``redis-server`` on a free port (no persistence)."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 15) -> None:
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def body_reader(seen: list[Any]) -> Callable[[], str]:
    """A view body that reads the whole request body and records its length in ``seen``
    (or the name of the error the read raised, which it re-raises)."""

    def read() -> str:
        try:
            data = flask.request.get_data()
        except Exception as error:
            seen.append(type(error).__name__)
            raise
        seen.append(len(data))
        return str(len(data))

    return read


def open_non_readers(
    base_url: str, path: str, count: int, stack: contextlib.ExitStack
) -> list[socket.socket]:
    """``count`` connections that GET ``path`` and never read it (a small receive buffer,
    so the server's side of each fills up at once); closed when ``stack`` closes."""
    host, port = base_url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = stack.enter_context(socket.socket())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sockets.append(sock)
    return sockets


def run_stress_script(script: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``stress/<script>`` with ``args``; its report (the last line of its output, JSON),
    after checking that its exit status agrees with the report's ``ok``."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), str(ROOT / "stress" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT / "stress",
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert result.returncode == (0 if report["ok"] else 1)
    return report
