"""SIGTERM under load: does every request sent before the signal get its response?

    python stress/sigterm.py [--rounds 10] [--clients 400] [--load 2] [--server SETUP]
                             [--workers 2] [--log FILE]

Each round starts ``flask --app <app> serve`` (or another ``--server`` setup, from
``common.SETUPS``: ``flask-workers`` is ``flask serve --workers N``, ``uvicorn`` plain
``uvicorn --lifespan on``, ``gunicorn-uvicorn`` gunicorn with uvicorn-worker's class,
``gunicorn-asgi`` gunicorn's own ``-k asgi``, ``gunicorn-flask-asgi`` flask-asgi's worker
class; ``--workers`` processes where the setup has several) on 127.0.0.1 with 10 ms views
(half async, half sync),
loads it with ``--clients`` connections (three in four keep-alive, one in four a new
connection per request, which exercises the accept queue), sends SIGTERM after ``--load``
seconds, and counts, per round, the requests written before the signal that did not get
their whole response (``lost``). Requests sent after the signal may fail: the server is
going away. Loopback only; bounded by ``--rounds`` x about (load + 5) seconds.
Prints one line per round and a summary; ``--json`` prints the rounds as JSON instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import SETUPS, free_port, read_response, start_server

APP = """
import asyncio, time
from flask import Flask
import flask_asgi

app = Flask(__name__)
asgi = flask_asgi.ASGI(app)

@app.get("/async")
async def async_view():
    await asyncio.sleep(0.01)
    return "async ok"

@app.get("/sync")
def sync_view():
    time.sleep(0.01)
    return "sync ok"
"""


@dataclass
class Round:
    ok: int = 0  # whole responses
    lost: int = 0  # sent before the signal, no whole response
    failed_after: int = 0  # sent after the signal, no response (expected)
    closed: int = 0  # keep-alive responses the server sent with Connection: close
    exit_code: int | None = None
    shutdown_s: float = 0.0  # from the signal to the end of the process


async def _client(
    port: int, index: int, keep_alive: bool, state: dict[str, float], result: Round
) -> None:
    path = b"/async" if index % 2 else b"/sync"
    request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
    request += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
    writer: asyncio.StreamWriter | None = None
    while True:
        if writer is None:
            if "signal" in state:
                return  # no new connection once the server is going away
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return  # refused: the server has stopped listening
        sent_at = time.monotonic()
        try:
            writer.write(request)
            status, close = await read_response(reader)
            ok = status == 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok, close = False, True
        if ok:
            result.ok += 1
            result.closed += close and keep_alive  # told to close by the server
        elif sent_at < state.get("signal", float("inf")):
            result.lost += 1
        else:
            result.failed_after += 1
        if close or not keep_alive:
            writer.close()
            writer = None


async def _load(
    port: int, clients: int, seconds: float, proc: subprocess.Popen[bytes], state: dict[str, float]
) -> Round:
    result = Round()
    tasks = [
        asyncio.ensure_future(_client(port, i, keep_alive=i % 4 != 0, state=state, result=result))
        for i in range(clients)
    ]
    await asyncio.sleep(seconds)
    state["signal"] = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait(tasks, timeout=30)
    return result


def run_round(
    app_dir: Path, server: str, clients: int, load: float, workers: int, log: Path | None
) -> Round:
    port = free_port()
    env = {"FLASK_ASGI_SHUTDOWN_TIMEOUT": "10"}
    proc = start_server(app_dir, "stress_app", port, env, server, log, workers=workers)
    try:
        state: dict[str, float] = {}
        result = asyncio.run(_load(port, clients, load, proc, state))
        result.exit_code = proc.wait(30)
        result.shutdown_s = round(time.monotonic() - state["signal"], 2)
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--load", type=float, default=2.0, help="seconds of load first")
    parser.add_argument("--server", choices=list(SETUPS), default="flask")
    parser.add_argument("--workers", type=int, default=2, help="processes, where it applies")
    parser.add_argument("--log", type=Path, help="a file for the last round's server output")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        (app_dir / "stress_app.py").write_text(APP)
        for number in range(1, args.rounds + 1):
            result = run_round(
                app_dir, args.server, args.clients, args.load, args.workers, args.log
            )
            rounds.append(result)
            if not args.json:
                print(f"round {number}: {asdict(result)}", flush=True)
    lost = sum(r.lost for r in rounds)
    if args.json:
        print(json.dumps([asdict(r) for r in rounds]))
    else:
        print(
            f"{args.server} ({args.workers} workers): {len(rounds)} rounds, "
            f"{args.clients} clients: "
            f"{sum(r.ok for r in rounds)} responses, {lost} lost "
            f"(rounds with a loss: {sum(r.lost > 0 for r in rounds)})"
        )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
