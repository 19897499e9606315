"""What the stress scripts share: a ``flask serve`` process on loopback, and a minimal
HTTP/1.1 client on asyncio streams (hundreds of connections from one process)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: ``start_server``'s setups: how each is started on ``{port}`` with ``{workers}`` processes
#: (``{module}:asgi`` for the servers that take an ASGI object's import path).
GUNICORN = ["gunicorn", "{module}:asgi", "-b", "127.0.0.1:{port}", "-w", "{workers}"]
SETUPS: dict[str, list[str]] = {
    "flask": ["flask", "--app", "{module}", "serve", "--port", "{port}"],
    "flask-workers": [
        "flask", "--app", "{module}", "serve", "--port", "{port}", "--workers", "{workers}"
    ],
    "granian": ["flask", "--app", "{module}", "serve", "--port", "{port}", "--server", "granian"],
    "hypercorn": [
        "flask", "--app", "{module}", "serve", "--port", "{port}", "--server", "hypercorn"
    ],
    "uvicorn": [
        "uvicorn", "{module}:asgi", "--port", "{port}", "--lifespan", "on",
        "--timeout-graceful-shutdown", "10",
    ],
    "gunicorn-uvicorn": [
        *GUNICORN, "-k", "uvicorn_worker.UvicornWorker", "--graceful-timeout", "20"
    ],
    "gunicorn-asgi": [*GUNICORN, "-k", "asgi", "--graceful-timeout", "20"],
    "gunicorn-flask-asgi": [
        *GUNICORN, "-k", "flask_asgi.gunicorn.Worker", "--graceful-timeout", "20"
    ],
}  # fmt: skip


def start_server(
    app_dir: Path,
    module: str,
    port: int,
    env: dict[str, str],
    server: str = "flask",
    log: Path | None = None,
    args: tuple[str, ...] = (),
    workers: int = 2,
    ready_path: str = "/async",
) -> subprocess.Popen[bytes]:
    """``flask --app module serve [args]``, or another of ``SETUPS`` (``workers``: processes,
    for the setups that start several; ``args`` go after the setup's own); ``log``: a file
    for the server's output (warnings and errors), else it is dropped. It is ready when
    ``GET ready_path`` answers 200."""
    words = {"module": module, "port": str(port), "workers": str(workers)}
    program, *setup = (word.format(**words) for word in SETUPS[server])
    command = [str(BIN / program), *setup, *args]
    output = subprocess.DEVNULL if log is None else open(log, "wb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [*command, "--log-level", "warning"],
            cwd=app_dir,
            env=dict(os.environ, **env),
            stdout=output,
            stderr=output,
        )
    finally:
        if log is not None:
            output.close()  # type: ignore[union-attr]  # the child has its own copy
    wait_ready(port, proc, ready_path)
    return proc


def wait_ready(port: int, proc: subprocess.Popen[bytes], path: str = "/async") -> None:
    deadline = time.monotonic() + 30
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(request)
                if sock.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response with a Content-Length: (status, it said Connection: close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), close


def process_threads_and_fds(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of process ``pid`` (Linux /proc)."""
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def tree_rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` and all its descendants (granian and hypercorn
    serve in child processes), in MiB (Linux /proc)."""
    total_kib = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return round(total_kib / 1024, 1)


STRESS_DIR = Path(__file__).resolve().parent


def for_each_server(
    servers: str, measure: Callable[[int, int], dict[str, Any]], module: str = "edges_app"
) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """Serve stress/``module`` with ``flask serve --server S`` for each S of the
    comma-separated ``servers``, one at a time; after a second to settle, yield (S, the
    server's RSS in MiB then, ``measure(port, pid)``), the server stopped."""
    for server in servers.split(","):
        port = free_port()
        proc = start_server(STRESS_DIR, module, port, {}, args=("--server", server))
        try:
            time.sleep(1.0)
            before = tree_rss_mib(proc.pid)
            result = measure(port, proc.pid)
        finally:
            stop_server(proc)
        yield server, before, result


def resources(port: int) -> dict[str, Any]:
    """``/debug/resources`` of ``resource_app.py``: the server's RSS, threads, fds, live
    greenlets and what its hooks counted."""
    request = b"GET /debug/resources HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/debug/resources answered {head[:40]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


def settle(port: int, timeout: float = 30) -> dict[str, Any]:
    """Wait until nothing but this check is in flight; then the resources."""
    deadline = time.monotonic() + timeout
    while True:
        now = resources(port)
        if now["in_flight"] <= 1 or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
