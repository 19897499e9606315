"""A soak: minutes of mixed load on ``flask serve``, sampling the server's resources.

    python stress/soak.py [--minutes 5] [--clients 50] [--interval 10]
    python stress/soak.py --seconds 20 --interval 2      (the short version CI runs)

``--clients`` loops against ``resource_app.py``, each picking at random: async and sync
views (keep-alive), views that wait (0.5 s async, 0.2 s sync), uploads to sync and async
views, async and sync streamed responses read to the end, a failing view (500), and
clients that leave at a random stage (the disconnect storm's). Every ``--interval`` the
server process is sampled (``/debug/resources``: RSS, threads, fds, live greenlets). At
the end, once nothing is in flight, the soak is flat if fds and threads are back to the
baseline (sampled once the warm-up, a tenth of the run, has settled), greenlets have not
grown, RSS has grown by at most ``--rss-slack`` MiB since the baseline, every answer was
the one expected (a 503 under the queue's bound counts apart) and the server logged no
error. Exit status 1 otherwise. Loopback only; bounded by the duration plus a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import STRESS_DIR, free_port, read_response, settle, start_server, stop_server
from disconnects import STAGES

KEEP_ALIVE = {
    "/async": b"GET /async HTTP/1.1\r\nHost: x\r\n\r\n",
    "/sync": b"GET /sync HTTP/1.1\r\nHost: x\r\n\r\n",
    "/wait": b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n",
    "/wait-sync": b"GET /wait-sync HTTP/1.1\r\nHost: x\r\n\r\n",
    "/upload": b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n" + b"u" * 10000,
    "/upload-async": b"POST /upload-async HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
    + b"u" * 10000,
    "/error": b"GET /error HTTP/1.1\r\nHost: x\r\n\r\n",
}
EXPECTED = {"/error": 500}
STREAMS = ["/stream?n=5", "/stream-sync?n=5"]


async def _keep_alive(port: int, until: float, outcomes: Counter[str]) -> None:
    """One connection, several requests on it, then close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(random.randrange(1, 20)):
            if time.monotonic() > until:
                break
            path = random.choice(list(KEEP_ALIVE))
            writer.write(KEEP_ALIVE[path])
            status, close = await asyncio.wait_for(read_response(reader), 30)
            wanted = EXPECTED.get(path, 200)
            outcomes["ok" if status == wanted else f"{path} {status}"] += 1
            if close:
                break
    finally:
        writer.close()


async def _stream(port: int, outcomes: Counter[str]) -> None:
    path = random.choice(STREAMS)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(-1), 30)  # to the server's close
        whole = data.startswith(b"HTTP/1.1 200") and data.endswith(b"0\r\n\r\n")
        outcomes["ok" if whole else f"{path} {data[:12]!r}"] += 1
    finally:
        writer.close()


async def _client(port: int, until: float, outcomes: Counter[str]) -> None:
    while time.monotonic() < until:
        choice = random.random()
        try:
            if choice < 0.7:
                await _keep_alive(port, until, outcomes)
            elif choice < 0.85:
                await _stream(port, outcomes)
            else:
                stage = random.choice(list(STAGES))
                await STAGES[stage](port, random.random() < 0.5)
                outcomes["left on purpose"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            outcomes[f"failed: {type(exc).__name__}"] += 1


async def _phase(
    port: int,
    clients: int,
    seconds: float,
    outcomes: Counter[str],
    samples: list[Any] | None,
    interval: float,
    started: float,
) -> None:
    """``clients`` loops for ``seconds``; under load, a sample every ``interval``."""
    until = time.monotonic() + seconds
    tasks = [asyncio.ensure_future(_client(port, until, outcomes)) for _ in range(clients)]
    while samples is not None and time.monotonic() + interval < until:
        await asyncio.sleep(interval)
        now = await asyncio.to_thread(settle, port, 0)  # at once: a sample under load
        samples.append(_pick(now, time.monotonic() - started))
    await asyncio.gather(*tasks)


async def _load(
    args: argparse.Namespace, port: int, started: float
) -> tuple[Counter[str], dict[str, Any], list[dict[str, Any]]]:
    """A warm-up (a tenth of the run), the baseline once it has settled, then the load."""
    outcomes: Counter[str] = Counter()
    warmup = max(1.0, args.duration / 10)
    await _phase(port, args.clients, warmup, outcomes, None, args.interval, started)
    baseline = _pick(await asyncio.to_thread(settle, port), time.monotonic() - started)
    samples: list[dict[str, Any]] = []
    await _phase(
        port, args.clients, args.duration - warmup, outcomes, samples, args.interval, started
    )
    return outcomes, baseline, samples


def _pick(now: dict[str, Any], at: float) -> dict[str, Any]:
    keys = ("rss_mib", "threads", "workers", "fds", "greenlets", "idle_greenlets", "in_flight")
    return {"t_s": round(at, 1), **{key: now[key] for key in keys}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        port = free_port()
        env = {"FLASK_ASGI_THREADS": str(args.threads)}
        proc = start_server(STRESS_DIR, "resource_app", port, env, log=log)
        started = time.monotonic()
        try:
            outcomes, first, samples = asyncio.run(_load(args, port, started))
            final = _pick(settle(port), time.monotonic() - started)
        finally:
            stop_server(proc)
        errors = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "Traceback" in line or "ERROR" in line or "Exception" in line
        ]
    overloaded = sum(n for what, n in outcomes.items() if what.endswith(" 503"))
    unexpected = {
        what: n
        for what, n in outcomes.items()
        if what not in ("ok", "left on purpose") and not what.endswith(" 503")
    }
    checks = {
        "fds back to the baseline": final["fds"] <= first["fds"],
        # Threads other than the pool's workers, which may have started since the baseline.
        "threads back to the baseline": final["threads"] - final["workers"]
        <= first["threads"] - first["workers"],
        "workers within FLASK_ASGI_THREADS": final["workers"] <= args.threads,
        "greenlets not grown": final["greenlets"] <= first["greenlets"] + args.greenlet_slack,
        "rss not grown": final["rss_mib"] <= first["rss_mib"] + args.rss_slack,
        "every answer the expected one": not unexpected,
        "nothing in flight at the end": final["in_flight"] <= 1,
        "no error in the server log": not errors,
    }
    return {
        "seconds": args.duration,
        "clients": args.clients,
        "answers": outcomes["ok"],
        "left_on_purpose": outcomes["left on purpose"],
        "overload_503s": overloaded,
        "unexpected": unexpected,
        "baseline": first,
        "under_load": samples,
        "final": final,
        "server_errors": errors[:10],
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=None, help="instead of --minutes")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--threads", type=int, default=16, help="FLASK_ASGI_THREADS")
    parser.add_argument("--rss-slack", type=float, default=16.0, help="MiB")
    parser.add_argument("--greenlet-slack", type=int, default=16)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    args.duration = args.seconds if args.seconds is not None else args.minutes * 60
    result = run(args)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
