"""Slow and greedy clients against ``flask serve``: does everyone else still get answers?

    python stress/slow_clients.py bodies   [--clients 500] [--seconds 8]
    python stress/slow_clients.py headers  [--clients 500] [--seconds 8]
    python stress/slow_clients.py overload [--clients 300] [--seconds 5]
    python stress/slow_clients.py readers  [--clients 40] [--seconds 8] [--server uvicorn]

Any mode also takes ``--interface wsgi`` (``--server granian``: the app all sync, its
``/async`` view a plain ``def``, served through granian's WSGI interface) and
``--threads N`` (FLASK_ASGI_THREADS).

``bodies``: clients send a 100-byte body to a sync view at 1 byte per second
(FLASK_ASGI_BODY_TIMEOUT=5, 8 worker threads). ``headers``: clients send their request
headers at 1 byte per second (FLASK_ASGI_HEADER_TIMEOUT=3). ``overload``: clients call a
sync view that takes 100 ms, as fast as they can, against 8 threads and
FLASK_ASGI_MAX_WAITING=16. ``readers``: clients GET a 5 MB static file (Flask's own
``/static``, ``send_file``) and never read it, with the default 40 worker threads, on
``--server`` (uvicorn, granian or hypercorn). Meanwhile a probe calls a sync and an async
view every 0.2 s (``readers``: a sync view and a 404, each due within 1 s; under overload
the sync probe may get a 503 like everyone else; the async one may not). The exit status
is 1 if a probe failed otherwise.
Prints what the attackers got, the probe latencies, the server's threads and fds, and
(``readers``) its resident memory, child processes included.
Loopback only; each run lasts about ``--seconds`` plus a few.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    free_port,
    percentile,
    process_threads_and_fds,
    read_response,
    start_server,
    stop_server,
    tree_rss_mib,
)

APP = """
import asyncio, time
from flask import Flask, request
import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

@app.post("/upload")
def upload():
    return str(len(request.get_data()))

@app.get("/block")
def block():
    time.sleep(0.1)
    return "done"

@app.get("/sync")
def sync_view():
    return "sync ok"

@app.get("/async")
async def async_view():
    return "async ok"
"""

ENV = {
    "bodies": {"FLASK_ASGI_THREADS": "8", "FLASK_ASGI_BODY_TIMEOUT": "5"},
    "headers": {"FLASK_ASGI_HEADER_TIMEOUT": "3"},
    "overload": {"FLASK_ASGI_THREADS": "8", "FLASK_ASGI_MAX_WAITING": "16"},
    "readers": {},
}
#: What the probe asks for and expects; ``readers`` asks for a sync view and a 404.
CHECKS = {b"/sync": 200, b"/async": 200}
READER_CHECKS = {b"/sync": 200, b"/missing": 404}
BIG_FILE_SIZE = 5 * 1024 * 1024


async def _probe(
    port: int,
    until: float,
    latencies: list[float],
    failures: list[str],
    checks: dict[bytes, int] = CHECKS,
) -> None:
    while time.monotonic() < until:
        for path, expected in checks.items():
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status, _ = await asyncio.wait_for(read_response(reader), 30)
                writer.close()
                if status != expected:
                    failures.append(f"{path.decode()} {status}")
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                failures.append(f"{path.decode()} {type(exc).__name__}")
            latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.2)


async def _slow_body(port: int, until: float, outcomes: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        response = asyncio.ensure_future(read_response(reader))
        while not response.done() and time.monotonic() < until:
            writer.write(b"x")
            await asyncio.wait({response}, timeout=1.0)
        if response.done():
            status, close = response.result()
            outcomes[f"{status}{' + close' if close else ''}"] += 1
        else:
            response.cancel()
            outcomes["no answer yet"] += 1
        writer.close()
    except (OSError, asyncio.IncompleteReadError) as exc:
        outcomes[type(exc).__name__] += 1


async def _slow_headers(port: int, until: float, outcomes: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sync HTTP/1.1\r\n")
        started = time.monotonic()
        closed = asyncio.ensure_future(reader.read(1))
        while not closed.done() and time.monotonic() < until:
            writer.write(b"X")
            await asyncio.wait({closed}, timeout=1.0)
        if closed.done():
            outcomes[f"closed by the server after {round(time.monotonic() - started)} s"] += 1
        else:
            closed.cancel()
            outcomes["still open"] += 1
        writer.close()
    except OSError as exc:
        outcomes[type(exc).__name__] += 1


async def _non_reader(port: int, until: float, outcomes: Counter[str]) -> None:
    """GET the big file on a 4 KiB receive buffer, read nothing until ``until``, then read
    the status line only (the response did start) and leave."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(until - time.monotonic())
        status = await asyncio.wait_for(reader.readexactly(12), 10)
        outcomes[status.decode(errors="replace")] += 1
        writer.close()
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        outcomes[type(exc).__name__] += 1
        sock.close()


async def _greedy(port: int, until: float, outcomes: Counter[str], ok_latency: list[float]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /block HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _ = await read_response(reader)
            writer.close()
            outcomes[str(status)] += 1
            if status == 200:
                ok_latency.append(time.monotonic() - started)
            else:
                await asyncio.sleep(0.05)  # honour Retry-After, a little
        except (OSError, asyncio.IncompleteReadError) as exc:
            outcomes[type(exc).__name__] += 1


async def _run(mode: str, port: int, pid: int, clients: int, seconds: float) -> dict[str, Any]:
    rss_before = tree_rss_mib(pid)
    until = time.monotonic() + seconds
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    failures: list[str] = []
    ok_latency: list[float] = []
    if mode == "bodies":
        attackers = [_slow_body(port, until + 10, outcomes) for _ in range(clients)]
    elif mode == "headers":
        attackers = [_slow_headers(port, until + 10, outcomes) for _ in range(clients)]
    elif mode == "readers":
        attackers = [_non_reader(port, until, outcomes) for _ in range(clients)]
    else:
        attackers = [_greedy(port, until, outcomes, ok_latency) for _ in range(clients)]
    tasks = [asyncio.ensure_future(a) for a in attackers]
    await asyncio.sleep(0.5)
    peak = process_threads_and_fds(pid)
    rss_peak = tree_rss_mib(pid)
    checks = READER_CHECKS if mode == "readers" else CHECKS
    probe = asyncio.ensure_future(_probe(port, until, latencies, failures, checks))
    while time.monotonic() < until:
        await asyncio.sleep(0.5)
        now = process_threads_and_fds(pid)
        peak = (max(peak[0], now[0]), max(peak[1], now[1]))
        rss_peak = max(rss_peak, tree_rss_mib(pid))
    await probe
    await asyncio.wait(tasks, timeout=20)
    await asyncio.sleep(1.5)  # the server's sweeps
    result: dict[str, Any] = {
        "mode": mode,
        "clients": clients,
        "attackers_got": dict(outcomes),
        "probes": len(latencies),
        "probe_failures": dict(Counter(failures)),
        "probe_p50_s": round(percentile(latencies, 0.5), 4),
        "probe_max_s": round(max(latencies, default=float("nan")), 4),
        "server_peak_threads_fds": peak,
        "server_threads_fds_after": process_threads_and_fds(pid),
    }
    if mode == "readers":
        result["server_rss_mib_before_peak_after"] = [rss_before, rss_peak, tree_rss_mib(pid)]
    if ok_latency:
        result["answered_p99_s"] = round(percentile(ok_latency, 0.99), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=sorted(ENV))
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--server", default="uvicorn", choices=["uvicorn", "granian", "hypercorn"])
    parser.add_argument("--interface", default="asgi", choices=["asgi", "wsgi"])
    parser.add_argument("--threads", type=int, default=None, help="FLASK_ASGI_THREADS")
    args = parser.parse_args()
    env = dict(ENV[args.mode])
    if args.threads:
        env["FLASK_ASGI_THREADS"] = str(args.threads)
    clients = args.clients or {"overload": 300, "readers": 40}.get(args.mode, 500)
    seconds = args.seconds or (5.0 if args.mode == "overload" else 8.0)
    with tempfile.TemporaryDirectory() as tmp:
        # Through WSGI the app must be all sync (flask serve refuses an async view).
        app = APP.replace("async def", "def") if args.interface == "wsgi" else APP
        (Path(tmp) / "slow_app.py").write_text(app)
        (Path(tmp) / "static").mkdir()
        (Path(tmp) / "static" / "big.bin").write_bytes(b"x" * BIG_FILE_SIZE)
        port = free_port()
        options = ("--server", args.server, "--interface", args.interface)
        proc = start_server(Path(tmp), "slow_app", port, env, args=options)
        try:
            result = asyncio.run(_run(args.mode, port, proc.pid, clients, seconds))
        finally:
            stop_server(proc)
    result["server"] = args.server
    result["interface"] = args.interface
    print(json.dumps(result))
    # Under overload a sync probe may get its 503 like anyone else; an async one may not.
    allowed = ("/sync 503",) if args.mode == "overload" else ()
    if args.mode == "readers" and not result["probe_max_s"] < 1:
        return 1  # NaN (no probe) fails too
    return 1 if set(result["probe_failures"]) - set(allowed) else 0


if __name__ == "__main__":
    sys.exit(main())
