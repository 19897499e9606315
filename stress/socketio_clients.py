"""A thousand realtime clients on the unchanged Flask-SocketIO and Flask-Sock examples.

    python stress/socketio_clients.py socketio [--clients 1000] [--server uvicorn]
        [--broadcasters 20] [--room-size 10] [--procs 2]
    python stress/socketio_clients.py sock [--clients 1000] [--server uvicorn] [--messages 10]

``socketio``: ``flask serve`` (``--server uvicorn|granian|hypercorn``) serves
examples/flask_socketio_chat.py, unchanged (Flask-SocketIO's threading mode). ``--clients``
python-socketio ``AsyncClient``\\s on the WebSocket transport, spread over ``--procs``
client processes, connect at once (each waits for its ``welcome``) and join a room of
``--room-size`` (``join``, with its ack). Then, at once, every client emits a ``chat`` to
its room, and the first ``--broadcasters`` clients also ``send`` a message, which the app
broadcasts to everyone: every client must receive its room's ``--room-size`` chats and
every broadcast (with the defaults 10,000 room deliveries and 20,000 broadcast deliveries;
``--broadcasters`` equal to ``--clients`` is the all-to-all chat room, a million
deliveries at 1,000 clients).

``sock``: examples/flask_sock_echo.py, unchanged; ``--clients`` ``websockets`` clients
connect to ``/echo`` at once, then each sends ``--messages`` messages one after the other,
each awaiting its echo.

Meanwhile a prober process calls the app's sync view (``GET /``) every 0.1 s: each answer
is due within ``--limit`` seconds (1). The report (one JSON line) has the connect time, the
time until every message was delivered and the deliveries per second, the probe latencies,
the server's resident memory (child processes included) and threads before the clients,
when all are connected and after the messages, and the memory per client. The exit status
is 1 if a client failed, a message went missing or a probe was late. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import subprocess
import sys
import time
from multiprocessing.synchronize import Event, Lock
from pathlib import Path
from typing import Any

from common import BIN, free_port, percentile, start_server, stop_server, tree_rss_mib, wait_ready

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MODULES = {"socketio": "flask_socketio_chat", "sock": "flask_sock_echo"}
SETUP = {"uvicorn": "flask", "granian": "granian", "hypercorn": "hypercorn"}
#: The phases' start signals: connect, send, leave.
Events = tuple[Event, Event, Event]


def serve(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    """``flask serve`` on ``--server``, or (``werkzeug``, for reference) ``flask run``,
    Werkzeug's threaded development server, as Flask-SocketIO's docs run it."""
    log = Path(args.log) if args.log else None
    if args.server != "werkzeug":
        return start_server(
            EXAMPLES, MODULES[args.app], port, {}, SETUP[args.server], log=log, ready_path="/"
        )
    output = subprocess.DEVNULL if log is None else open(log, "wb")  # noqa: SIM115
    command = [str(BIN / "flask"), "--app", MODULES[args.app], "run", "--port", str(port)]
    try:
        proc = subprocess.Popen(command, cwd=EXAMPLES, stdout=output, stderr=output)
    finally:
        if log is not None:
            output.close()  # type: ignore[union-attr]  # the child has its own copy
    wait_ready(port, proc, "/")
    return proc


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (the server and the client
    processes inherit it): a thousand connections need a few thousand descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tree_threads(pid: int) -> int:
    """Threads of process ``pid`` and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


# -- the prober: its own process, so the clients' busy loops do not delay it ----------------


def probe(port: int, stop: Event, out: Any) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    latencies: list[tuple[float, float]] = []  # (when it started, how long it took)
    failures: list[str] = []
    while not stop.is_set():
        when, started = time.time(), time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            if not data.startswith(b"HTTP/1.1 200"):
                failures.append(repr(data[:40]))
        except OSError as error:
            failures.append(repr(error))
        latencies.append((when, time.perf_counter() - started))
        stop.wait(0.1)
    out.put({"latencies": latencies, "failures": failures})


# -- the clients: --procs processes, each an asyncio loop with its share of the clients ----


async def socketio_clients(
    port: int, ids: range, args: argparse.Namespace, go: Events, out: Any, join_lock: Lock
) -> None:
    import socketio  # the client processes only

    url = f"http://127.0.0.1:{port}"
    expected_broadcasts = {f"b{i}" for i in range(args.broadcasters)}
    clients: dict[int, Any] = {}
    room_chats: dict[int, int] = dict.fromkeys(ids, 0)
    broadcasts: dict[int, int] = dict.fromkeys(ids, 0)
    last_delivery = [0.0]
    missing = [len(ids) * (args.room_size + args.broadcasters)]
    all_in = asyncio.Event()

    def delivered() -> None:
        last_delivery[0] = time.time()
        missing[0] -= 1
        if missing[0] == 0:
            all_in.set()

    def make(i: int) -> Any:
        client = socketio.AsyncClient(reconnection=False)
        welcome = asyncio.Event()

        @client.on("welcome")
        def on_welcome(data: Any) -> None:
            welcome.set()

        @client.on("chat")
        def on_chat(data: Any) -> None:
            room_chats[i] += 1
            delivered()

        @client.on("message")
        def on_message(text: str) -> None:
            if text.partition(": ")[2] in expected_broadcasts:
                broadcasts[i] += 1
                delivered()

        client.welcome = welcome  # type: ignore[attr-defined]
        return client

    errors: list[str] = []

    async def connect(i: int) -> None:
        client = make(i)
        try:
            await client.connect(
                url, transports=["websocket"], auth={"name": f"c{i}"}, wait_timeout=120
            )
            await asyncio.wait_for(client.welcome.wait(), 120)
            clients[i] = client
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(f"connect {i}: {error!r}")

    async def join(i: int) -> None:
        try:
            await clients[i].call("join", f"r{i // args.room_size}", timeout=120)
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(f"join {i}: {error!r}")

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, go[0].wait)
    started = time.time()
    await asyncio.gather(*(connect(i) for i in ids))
    connected = time.time()
    # One join at a time (across the processes too): the example's join handler returns
    # rooms(), and python-socketio's get_rooms() iterates the rooms that a concurrent
    # join_room changes ("dictionary changed size during iteration": 2 acks of 1,000 lost
    # when all joined at once, on any server). Joining is the set-up, not the load.
    await loop.run_in_executor(None, join_lock.acquire)
    try:
        for i in sorted(clients):
            await join(i)
    finally:
        join_lock.release()
    joined = time.time()
    out.put({"connected": len(clients), "started": started, "connect_done": connected,
             "join_done": joined, "errors": errors[:20], "error_count": len(errors)})  # fmt: skip
    await loop.run_in_executor(None, go[1].wait)  # the parent has measured: now send
    sent = time.time()

    async def send(i: int) -> None:
        client = clients[i]
        await client.emit("chat", {"text": str(i), "room": f"r{i // args.room_size}"})
        if i < args.broadcasters:
            await client.send(f"b{i}")

    await asyncio.gather(*(send(i) for i in clients))
    try:
        await asyncio.wait_for(all_in.wait(), args.deliver_timeout)
    except TimeoutError:
        pass
    out.put({"sent": sent, "last_delivery": last_delivery[0], "missing": missing[0],
             "short_rooms": sum(1 for i in clients if room_chats[i] < args.room_size),
             "short_broadcasts": sum(1 for i in clients if broadcasts[i] < args.broadcasters),
             "disconnected": sum(1 for c in clients.values() if not c.connected)})  # fmt: skip
    await loop.run_in_executor(None, go[2].wait, 60)  # until the parent has measured
    # Everyone leaves at once (the app's disconnect handler broadcasts "left" to the rest).
    closing = [c.eio.ws.close() for c in clients.values() if c.eio.ws is not None]
    await asyncio.gather(*closing, return_exceptions=True)


async def sock_clients(
    port: int, ids: range, args: argparse.Namespace, go: Events, out: Any, join_lock: Lock
) -> None:
    from websockets.asyncio.client import connect as ws_connect

    connections: dict[int, Any] = {}
    errors: list[str] = []
    echoed = [0]

    async def connect(i: int) -> None:
        try:
            connections[i] = await ws_connect(
                f"ws://127.0.0.1:{port}/echo", open_timeout=120, ping_timeout=60
            )
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(f"connect {i}: {error!r}")

    async def talk(i: int) -> None:
        ws = connections[i]
        try:
            for n in range(args.messages):
                text = f"{i}:{n}"
                await ws.send(text)
                if await asyncio.wait_for(ws.recv(), args.deliver_timeout) == text:
                    echoed[0] += 1
        except Exception as error:  # noqa: BLE001 - reported
            errors.append(f"echo {i}: {error!r}")

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, go[0].wait)
    started = time.time()
    await asyncio.gather(*(connect(i) for i in ids))
    connected = time.time()
    report = {"connected": len(connections), "started": started, "connect_done": connected}
    out.put({**report, "join_done": connected, "errors": errors[:20], "error_count": len(errors)})
    await loop.run_in_executor(None, go[1].wait)
    sent = time.time()
    await asyncio.gather(*(talk(i) for i in connections))
    out.put({"sent": sent, "last_delivery": time.time(),
             "missing": len(ids) * args.messages - echoed[0], "short_rooms": 0,
             "short_broadcasts": 0, "disconnected": 0, "errors": errors[:20]})  # fmt: skip
    await loop.run_in_executor(None, go[2].wait, 60)
    await asyncio.gather(*(ws.close() for ws in connections.values()), return_exceptions=True)


def client_process(
    port: int, ids: range, args: argparse.Namespace, go: Events, out: Any, join_lock: Lock
) -> None:
    run = socketio_clients if args.app == "socketio" else sock_clients
    asyncio.run(run(port, ids, args, go, out, join_lock))


# -- the run ---------------------------------------------------------------------------------


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=False))["ListenOverflows"])
    return 0


def snapshot(pid: int) -> dict[str, float]:
    return {"rss_mib": tree_rss_mib(pid), "threads": tree_threads(pid)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_fd_limit()
    port = free_port()
    server = serve(args, port)
    mp = multiprocessing.get_context("spawn")
    go, stop_probe, join_lock = (mp.Event(), mp.Event(), mp.Event()), mp.Event(), mp.Lock()
    out, probe_out = mp.Queue(), mp.Queue()
    share = -(-args.clients // args.procs)
    procs = [
        mp.Process(
            target=client_process,
            args=(port, range(start, min(start + share, args.clients)), args, go, out, join_lock),
        )
        for start in range(0, args.clients, share)
    ]
    prober = mp.Process(target=probe, args=(port, stop_probe, probe_out))
    report: dict[str, Any] = {"app": args.app, "server": args.server, "clients": args.clients}
    wait = args.deliver_timeout + 300
    try:
        for proc in procs:
            proc.start()
        prober.start()
        time.sleep(3)  # the client processes have imported their libraries
        before = snapshot(server.pid)
        overflows = listen_overflows()
        go[0].set()
        ready = [out.get(timeout=wait) for _ in procs]
        at_connect = snapshot(server.pid)
        started = min(r["started"] for r in ready)
        connected = sum(r["connected"] for r in ready)
        go[1].set()
        done = [out.get(timeout=wait) for _ in procs]
        after = snapshot(server.pid)
        overflows = listen_overflows() - overflows
        leave = time.time()
        go[2].set()
        for proc in procs:
            proc.join(60)
        time.sleep(args.leave_seconds)  # the prober goes on while the server lets them go
        after_leaving = snapshot(server.pid)
        stop_probe.set()
        probes = probe_out.get(timeout=30)
    finally:
        for proc in [*procs, prober]:
            if proc.is_alive():
                proc.kill()
        stop_server(server)
    sent = min(d["sent"] for d in done)
    last = max(d["last_delivery"] for d in done)
    if args.app == "socketio":
        deliveries = args.clients * (args.room_size + args.broadcasters)
        workload = (
            f"every client emits a chat to its room of {args.room_size};"
            f" {args.broadcasters} clients send a message broadcast to all"
        )
    else:
        deliveries = args.clients * args.messages
        workload = f"every client sends {args.messages} messages, each awaiting its echo"
    missing = sum(d["missing"] for d in done)
    timed = probes["latencies"]
    latencies = [took for _, took in timed]
    phases = {  # the slowest probe that started in each phase
        "connect": (started, max(r["connect_done"] for r in ready)),
        "join": (max(r["connect_done"] for r in ready), max(r["join_done"] for r in ready)),
        "messages": (sent, last),
        "leave": (leave, leave + args.leave_seconds),
    }
    slowest = {
        name: round(max((took for when, took in timed if start <= when < end), default=0), 3)
        for name, (start, end) in phases.items()
    }
    per_client = (at_connect["rss_mib"] - before["rss_mib"]) * 1024 / max(connected, 1)
    report.update(
        workload=workload,
        fd_limit=nofile,
        connected=connected,
        connect_s=round(max(r["connect_done"] for r in ready) - started, 2),
        join_s=round(max(r["join_done"] for r in ready) - started, 2),
        deliveries=deliveries - missing,
        delivered_s=round(last - sent, 2),
        deliveries_per_s=round((deliveries - missing) / max(last - sent, 1e-9)),
        missing=missing,
        short_rooms=sum(d["short_rooms"] for d in done),
        short_broadcasts=sum(d["short_broadcasts"] for d in done),
        disconnected=sum(d["disconnected"] for d in done),
        errors=[e for r in [*ready, *done] for e in r.get("errors", [])][:10],
        error_count=sum(r.get("error_count", 0) for r in ready),
        probes=len(latencies),
        probe_median_s=round(percentile(latencies, 0.5), 3),
        probe_max_s=round(max(latencies, default=float("nan")), 3),
        probe_max_by_phase_s=slowest,
        listen_overflows=overflows,
        probe_failures=probes["failures"][:5],
        server_before=before,
        server_connected=at_connect,
        server_after=after,
        server_after_leaving=after_leaving,
        kib_per_client=round(per_client),
        threads_per_client=round(
            (at_connect["threads"] - before["threads"]) / max(connected, 1), 2
        ),
    )
    report["checks"] = checks = {
        "all connected": connected == args.clients and report["error_count"] == 0,
        "all delivered": missing == 0 and not report["errors"],
        "probes answered within the limit": bool(latencies)
        and not probes["failures"]
        and max(slowest[phase] for phase in ("connect", "join", "messages")) <= args.limit,
    }
    report["ok"] = all(checks.values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("app", choices=sorted(MODULES))
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--server", choices=[*sorted(SETUP), "werkzeug"], default="uvicorn")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--broadcasters", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10, help="sock: messages per client")
    parser.add_argument("--limit", type=float, default=1.0, help="seconds a probe may take")
    parser.add_argument("--deliver-timeout", type=float, default=120)
    parser.add_argument(
        "--leave-seconds", type=float, default=10, help="probing after everyone left"
    )
    parser.add_argument("--log", help="a file for the server's output")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
