"""Messages per second and delivery latency of an unchanged Flask-SocketIO chat, per server.

    python bench/socketio_chat.py [--clients 100] [--room-size 10] [--seconds 10]

The same app, examples/flask_socketio_chat.py (unchanged), on:

* ``flask serve`` (flask-asgi on uvicorn) and ``flask serve --server granian``:
  Flask-SocketIO's threading mode, real WebSockets through ``werkzeug.socket``;
* ``flask run``: Werkzeug's threaded development server, the same threading mode;
* gunicorn ``-k gevent -w 1``: Flask-SocketIO's gevent mode, as its docs deploy it, with
  simple-websocket (python-engineio's gevent driver uses it when gevent-websocket is not
  installed). gevent lives in its own venv, ``bench/.venv-gevent`` (built here when missing
  or when the requirements below change): installed in the project's venv, ``SocketIO(app)``
  would pick gevent mode under flask-asgi too.

Each server runs in one process pinned to CPU 0; the clients (``--clients`` python-socketio
``AsyncClient``\\s on the WebSocket transport, in two processes pinned to CPU 1) join rooms of
``--room-size``. Then each client, in a closed loop, emits a ``chat`` to its room and waits
until its own message comes back before the next: the app delivers every message to the
room's ``--room-size`` members. After ``--warmup`` seconds, ``--seconds`` are measured:
messages per second (sent and delivered back to the sender), deliveries per second, and the
latency of every delivery (from the send to its arrival at each member) p50/p99/max. Each
run also records the server's Socket.IO async mode, peak threads and RSS. Writes
``bench/results/socketio_chat.md``, ``.json`` and ``.png`` (matplotlib, from the gevent
venv). About 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from multiprocessing.synchronize import Event, Lock
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
GEVENT_VENV = ROOT / "bench" / ".venv-gevent"
GEVENT_REQUIREMENTS = [
    "flask", "flask-socketio", "gevent", "gunicorn", "simple-websocket", "matplotlib"
]  # fmt: skip
APP = "flask_socketio_chat"

#: name -> (command with {port}, the python of its venv)
CANDIDATES: dict[str, tuple[list[str], Path]] = {
    "flask-asgi (flask serve, uvicorn)": (
        [str(BIN / "flask"), "--app", APP, "serve", "--port", "{port}", "--log-level", "warning"],
        BIN / "python",
    ),
    "flask-asgi (flask serve --server granian)": (
        [str(BIN / "flask"), "--app", APP, "serve", "--port", "{port}", "--server", "granian",
         "--log-level", "warning"],
        BIN / "python",
    ),
    "Werkzeug threaded (flask run)": (
        [str(BIN / "flask"), "--app", APP, "run", "--port", "{port}"],
        BIN / "python",
    ),
    "gunicorn -k gevent (gevent mode)": (
        [str(GEVENT_VENV / "bin" / "gunicorn"), "-k", "gevent", "-w", "1",
         "--worker-connections", "4000", "-b", "127.0.0.1:{port}", f"{APP}:app",
         "--log-level", "warning"],
        GEVENT_VENV / "bin" / "python",
    ),
}  # fmt: skip


def ensure_gevent_venv() -> None:
    stamp = GEVENT_VENV / "requirements.txt"
    wanted = "\n".join(GEVENT_REQUIREMENTS) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    print(f"building {GEVENT_VENV} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(GEVENT_VENV)], check=True)
    pip = [str(GEVENT_VENV / "bin" / "pip"), "install", "-q", *GEVENT_REQUIREMENTS]
    subprocess.run(pip, check=True)
    stamp.write_text(wanted)


def async_mode(python: Path) -> str:
    """The async mode ``SocketIO(app)`` picks in that venv (gunicorn's gevent worker
    monkey-patches first, so do the same there)."""
    patch = "from gevent import monkey; monkey.patch_all(); " if "gevent" in str(python) else ""
    code = f"{patch}import {APP} as m; print(m.socketio.async_mode)"
    out = subprocess.run(
        [str(python), "-c", code], cwd=EXAMPLES, capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip() or f"? {out.stderr[-200:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def threads_and_rss(pid: int) -> tuple[int, float]:
    threads, kib = 0, 0
    for current in tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    threads += int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return threads, round(kib / 1024, 1)


# -- the clients -----------------------------------------------------------------------------


async def clients(
    port: int, ids: range, args: argparse.Namespace, go: Event, start: Any, out: Any, lock: Lock
) -> None:
    import socketio

    url = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    window = [0.0, 0.0]  # the measured part: [from, to)
    sent = [0]
    errors: list[str] = []

    async def one(i: int) -> Any:
        client = socketio.AsyncClient(reconnection=False)
        mine = asyncio.Event()
        name = f"c{i}"

        @client.on("chat")
        def on_chat(data: Any) -> None:
            now = time.time()
            at = float(data["text"])
            if window[0] <= at < window[1]:
                latencies.append(now - at)
            if data["name"] == name:
                mine.set()

        await client.connect(url, transports=["websocket"], auth={"name": name}, wait_timeout=60)
        client.mine = mine  # type: ignore[attr-defined]
        return client

    async def loop_of(i: int, client: Any, until: float) -> None:
        room = f"r{i // args.room_size}"
        while (now := time.time()) < until:
            client.mine.clear()
            await client.emit("chat", {"text": repr(now), "room": room})
            await asyncio.wait_for(client.mine.wait(), 30)
            if window[0] <= now < window[1]:
                sent[0] += 1

    connected = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
    ready = {i: c for i, c in zip(ids, connected, strict=True) if not isinstance(c, Exception)}
    errors += [repr(c) for c in connected if isinstance(c, Exception)]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lock.acquire)  # one join at a time (see stress/)
    try:
        for i, client in ready.items():
            await client.call("join", f"r{i // args.room_size}", timeout=30)
    finally:
        lock.release()
    out.put({"connected": len(ready)})
    await loop.run_in_executor(None, go.wait)
    window[:] = [start.value + args.warmup, start.value + args.warmup + args.seconds]
    results = await asyncio.gather(
        *(loop_of(i, c, window[1]) for i, c in ready.items()), return_exceptions=True
    )
    errors += [repr(r) for r in results if isinstance(r, Exception)]
    await asyncio.gather(*(c.disconnect() for c in ready.values()), return_exceptions=True)
    out.put({"sent": sent[0], "latencies": latencies, "errors": errors[:5]})


def client_process(*args: Any) -> None:
    os.sched_setaffinity(0, {1})
    asyncio.run(clients(*args))


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command, python = CANDIDATES[name]
    port = free_port()
    argv = ["taskset", "-c", "0", *(word.format(port=port) for word in command)]
    log = open(RESULTS / "raw" / f"socketio_chat-{port}.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(argv, cwd=EXAMPLES, stdout=log, stderr=log, start_new_session=True)
    log.close()
    mp = multiprocessing.get_context("spawn")
    go, lock, out = mp.Event(), mp.Lock(), mp.Queue()
    start = mp.Value("d", 0.0)
    half = args.clients // 2
    shares = [range(0, half), range(half, args.clients)]
    procs = [
        mp.Process(target=client_process, args=(port, ids, args, go, start, out, lock))
        for ids in shares
    ]
    peak_threads, peak_rss = 0, 0.0
    try:
        wait_ready(port, server)
        for proc in procs:
            proc.start()
        connected = sum(out.get(timeout=120)["connected"] for _ in procs)
        start.value = time.time() + 0.2
        go.set()
        end = start.value + args.warmup + args.seconds
        while time.time() < end:
            threads, rss = threads_and_rss(server.pid)
            peak_threads, peak_rss = max(peak_threads, threads), max(peak_rss, rss)
            time.sleep(0.25)
        reports = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
    latencies = sorted(x for r in reports for x in r["latencies"])

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    sent = sum(r["sent"] for r in reports)
    return {
        "server": name,
        "async_mode": async_mode(python),
        "clients": args.clients,
        "connected": connected,
        "messages_per_s": round(sent / args.seconds),
        "deliveries_per_s": round(len(latencies) / args.seconds),
        "p50_ms": pct(0.5) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        "errors": [e for r in reports for e in r["errors"]][:5],
        "peak_threads": peak_threads,
        "peak_rss_mib": peak_rss,
    }


def write(results: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    werkzeug = next((r for r in results if "Werkzeug" in r["server"]), results[0])
    lines = [
        "# Socket.IO chat: messages per second and delivery latency",
        "",
        f"One run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python bench/"
        f"socketio_chat.py --clients {args.clients} --room-size {args.room_size} --seconds"
        f" {args.seconds}`. The unchanged examples/flask_socketio_chat.py; {args.clients}"
        f" python-socketio clients on the WebSocket transport (two processes on CPU 1), in"
        f" rooms of {args.room_size}; each emits a chat to its room and waits for its own"
        " message to come back before the next (every message is delivered to the room's"
        f" {args.room_size} members). The server is one process on CPU 0. {args.warmup} s"
        f" warm-up, {args.seconds} s measured.",
        "",
        "| server | Socket.IO mode | messages/s | deliveries/s | vs Werkzeug | p50 ms |"
        " p99 ms | max ms | peak threads | peak RSS MiB | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        ratio = r["messages_per_s"] / max(werkzeug["messages_per_s"], 1)
        lines.append(
            f"| {r['server']} | {r['async_mode']} | {r['messages_per_s']} |"
            f" {r['deliveries_per_s']} | {ratio:.2f}x | {r['p50_ms']} | {r['p99_ms']} |"
            f" {r['max_ms']} | {r['peak_threads']} | {r['peak_rss_mib']} |"
            f" {len(r['errors'])} |"
        )
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()},"
        f" Python {platform.python_version()}.",
        "Quote ratios from this run only.",
    ]
    (out / "socketio_chat.md").write_text("\n".join(lines) + "\n")
    (out / "socketio_chat.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1) + "\n"
    )
    plot = (
        "import json, sys, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "data = json.load(open(sys.argv[1]))['results']\n"
        "names = [d['server'].replace(' (', '\\n(') for d in data]\n"
        "fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))\n"
        "a.barh(names, [d['messages_per_s'] for d in data]); a.set_xlabel('messages/s')\n"
        "a.invert_yaxis(); b.barh(names, [d['p99_ms'] or 0 for d in data])\n"
        "b.set_xlabel('p99 delivery latency (ms)'); b.invert_yaxis(); b.set_yticklabels([])\n"
        "fig.suptitle('Unchanged Flask-SocketIO chat, one server process')\n"
        "fig.tight_layout(); fig.savefig(sys.argv[2], dpi=100)\n"
    )
    subprocess.run(
        [str(GEVENT_VENV / "bin" / "python"), "-c", plot, str(out / "socketio_chat.json"),
         str(out / "socketio_chat.png")],
        check=False,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--only", help="comma-separated parts of candidate names")
    args = parser.parse_args()
    ensure_gevent_venv()
    (RESULTS / "raw").mkdir(parents=True, exist_ok=True)
    names = list(CANDIDATES)
    if args.only:
        names = [n for n in names if any(part in n for part in args.only.split(","))]
    results = []
    for name in names:
        result = measure(name, args)
        print(json.dumps(result), file=sys.stderr)
        results.append(result)
    out = RESULTS / "raw" / "partial" if args.only else RESULTS  # partial runs: not published
    out.mkdir(parents=True, exist_ok=True)
    write(results, args, out)
    print((out / "socketio_chat.md").read_text())


if __name__ == "__main__":
    main()
