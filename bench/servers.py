"""flask-asgi on every ASGI server, plus the inline-Flask ceiling: ``python bench/servers.py``.

A short, bounded companion of bench/run.py (which compares frameworks on uvicorn): the same
benchmark app (apps/flask_asgi_app.py) on uvicorn, granian, hypercorn, gunicorn with
uvicorn-worker and gunicorn's own asgi worker, each one process on CPU 0 with wrk on CPU 1.
The "inline ceiling" row is NOT a runtime: apps/inline_flask_app.py calls ``app.wsgi_app``
right on the loop (no greenlet, no thread, nothing can wait), the most any adapter of an
unmodified Flask app can reach on uvicorn.

Run it with the project's venv (``.venv/bin/python bench/servers.py``; the servers come
from the ``test`` extra) and wrk installed. ``--env KEY=VALUE`` sets a variable for every
server (e.g. ``--env FLASK_ASGI_GC=off`` to measure without the GC tuning). Default: 5 s
per measurement after 1 s of warm-up, 2 interleaved passes, the best pass of each cell is
kept (other processes on the machine only ever slow a pass down): about 8 minutes. Writes
bench/results/servers.md and servers.json (``--out``, ``--label``).

``--app flask-asgi,quart,starlette`` serves each app on each server in the same run (Quart
and Starlette: run it with bench/.venv's python, which bench/run.py builds). The
fan-out workload starts bench/upstream.py on the load CPU itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
WRK = BENCH / "wrk"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
SERVER_CPU, LOAD_CPU = "0", "1"


@dataclasses.dataclass(frozen=True)
class Workload:
    key: str
    path: str
    connections: int
    script: str = "report.lua"


WORKLOADS = [
    Workload("hello", "/hello", 64),
    Workload("sync-hello", "/sync-hello", 64),
    Workload("echo", "/echo", 64, "echo.lua"),
    Workload("sleep-256", "/sleep", 256),
    Workload("sleep-1000", "/sleep", 1000),
    # 5 concurrent 20 ms calls to bench/upstream.py through one shared aiohttp session.
    Workload("fanout-aiohttp", "/fanout-aiohttp", 100),
]
#: Workloads that need bench/upstream.py running (started on the load CPU when selected).
UPSTREAM_WORKLOADS = {"fanout-aiohttp"}
UPSTREAM_PORT = 9100
#: The ceiling app serves only the routes that need no waiting.
CEILING_WORKLOADS = {"hello", "sync-hello", "echo"}
#: Workloads only flask-asgi's app serves (a plain ``def`` view in a worker thread).
FLASK_ASGI_ONLY = {"sync-hello"}


def _uvicorn(target: str, port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"), target, "--app-dir", str(APPS), "--host", HOST,
        "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--lifespan", "on",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


#: The apps a run can serve (``--app``, comma-separated): flask-asgi's, and Quart's or
#: Starlette's for comparison on the same servers in the same run. The inline ceiling
#: always serves its own.
APPS_BY_NAME = {
    "flask-asgi": "flask_asgi_app:asgi",
    "quart": "quart_app:app",
    "starlette": "starlette_app:app",
}


def _gunicorn(worker: str, target: str, port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"), target, "--chdir", str(APPS), "-k", worker,
        "-w", "1", "--bind", f"{HOST}:{port}", "--backlog", "2048",
        "--worker-connections", "4000", "--log-level", "warning",
    ]  # fmt: skip


def _granian(target: str, port: int) -> list[str]:
    return [
        str(BIN / "granian"), "--interface", "asgi", "--working-dir", str(APPS),
        "--host", HOST, "--port", str(port), "--loop", "uvloop", "--backlog", "2048",
        "--log-level", "warning", target,
    ]  # fmt: skip


def _hypercorn(target: str, port: int) -> list[str]:
    return [
        str(BIN / "hypercorn"), target, "--bind", f"{HOST}:{port}",
        "-k", "uvloop", "--backlog", "2048", "--log-level", "warning",
    ]  # fmt: skip


#: server -> (app target, port) -> command.
CANDIDATES: dict[str, Any] = {
    "uvicorn": _uvicorn,
    "granian": _granian,
    "hypercorn": _hypercorn,
    "gunicorn+uvicorn-worker": lambda t, port: _gunicorn("uvicorn_worker.UvicornWorker", t, port),
    "gunicorn-asgi": lambda t, port: _gunicorn("asgi", t, port),
    "inline-ceiling": lambda t, port: _uvicorn("inline_flask_app:asgi", port),
}


def column(server: str, app: str) -> str:
    """The results column of ``app`` on ``server``: flask-asgi's is the server's name."""
    return server if app == "flask-asgi" or server == "inline-ceiling" else f"{server} [{app}]"


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/hello", timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(port: int, workload: Workload, seconds: int) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c", str(workload.connections),
        "-d", f"{seconds}s", "--timeout", "10s", "--latency", "-s", str(WRK / workload.script),
        f"http://{HOST}:{port}{workload.path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON ") :])  # type: ignore[no-any-return]
    raise RuntimeError(f"wrk printed no summary:\n{out[-2000:]}")


def peak_rss_kib(pid: int) -> int:
    """VmHWM of the server and its children (gunicorn's and granian's workers)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def measure(
    name: str, app: str, workload: Workload, args: argparse.Namespace, port: int
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1", **dict(args.env))
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *CANDIDATES[name](APPS_BY_NAME[app], port)],
        cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(port, proc)
        if args.warmup:
            wrk(port, workload, args.warmup)
        summary = wrk(port, workload, args.duration)
        rss = peak_rss_kib(proc.pid)
    finally:
        stop(proc)
    seconds = summary["duration_us"] / 1e6
    errors = sum(summary["errors"].values())
    return {
        "rps": summary["requests"] / seconds,
        "p50_ms": summary["latency_us"]["p50"] / 1000,
        "p99_ms": summary["latency_us"]["p99"] / 1000,
        "errors": errors,
        "peak_rss_mib": rss / 1024,
    }


def table(results: dict[str, dict[str, Any]], names: list[str], workloads: list[str]) -> str:
    head = "| workload | " + " | ".join(names) + " |"
    lines = [head, "|---|" + "--:|" * len(names)]
    for key in workloads:
        base = results.get("uvicorn", {}).get(key)
        cells = []
        for name in names:
            cell = results.get(name, {}).get(key)
            if cell is None:
                cells.append("–")
                continue
            ratio = f" ({cell['rps'] / base['rps']:.2f}×)" if base and name != "uvicorn" else ""
            errors = f", {cell['errors']} errors" if cell["errors"] else ""
            cells.append(f"{cell['rps']:,.0f}{ratio}, p99 {cell['p99_ms']:,.0f} ms{errors}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated workloads and candidates")
    parser.add_argument("--env", action="append", default=[], type=lambda s: s.split("=", 1))
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--label", default="servers")
    parser.add_argument(
        "--app", default="flask-asgi", help=f"comma-separated, of {', '.join(APPS_BY_NAME)}"
    )
    args = parser.parse_args()
    apps = [a for a in args.app.split(",") if a]
    if not apps or set(apps) - set(APPS_BY_NAME):
        parser.error(f"--app takes {', '.join(APPS_BY_NAME)}")
    only = set(filter(None, args.only.split(",")))
    servers = [n for n in CANDIDATES if not only & set(CANDIDATES) or n in only]
    loads = [w for w in WORKLOADS if not only & {w.key for w in WORKLOADS} or w.key in only]
    # Each (server, app) is one candidate; the ceiling is served once, whatever the apps.
    pairs = [(s, a) for a in apps for s in servers if s != "inline-ceiling" or a == apps[0]]
    names = [column(s, a) for s, a in pairs]
    results: dict[str, dict[str, Any]] = {}
    upstream = None
    if UPSTREAM_WORKLOADS & {w.key for w in loads}:
        upstream = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH / "upstream.py"),
             "--port", str(UPSTREAM_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
    port = 9300
    try:
        for pass_no in range(args.passes):
            for workload in loads:
                shift = pass_no % len(pairs)
                for server, app in pairs[shift:] + pairs[:shift]:
                    if server == "inline-ceiling" and workload.key not in CEILING_WORKLOADS:
                        continue
                    if app != "flask-asgi" and workload.key in FLASK_ASGI_ONLY:
                        continue
                    name = column(server, app)
                    port += 1
                    cell = measure(server, app, workload, args, port)
                    best = results.setdefault(name, {}).get(workload.key)
                    if best is None or cell["rps"] > best["rps"]:
                        results[name][workload.key] = cell
                    print(f"{workload.key:<14} {name:<30} {cell['rps']:>9,.0f} req/s"
                          f"  p99 {cell['p99_ms']:>8,.1f} ms  rss {cell['peak_rss_mib']:.0f} MiB"
                          f"  errors {cell['errors']}", flush=True)  # fmt: skip
    finally:
        if upstream is not None:
            upstream.terminate()
            upstream.wait()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    setting = ", ".join(f"{k}={v}" for k, v in args.env) or "defaults"
    text = (
        f"# {', '.join(apps)} per server ({args.label})\n\n{when}, {platform.processor() or 'cpu'},"
        f" Python {platform.python_version()}, {os.cpu_count()} cores; server on CPU 0, wrk"
        f" on CPU 1; {args.duration} s after {args.warmup} s warm-up, best of {args.passes}"
        f" interleaved passes; {setting}."
        f" Ratios are to {apps[0]} on uvicorn in the same run."
        " inline-ceiling is a"
        " ceiling, not a runtime (bench/apps/inline_flask_app.py).\n\n"
        + table(results, names, [w.key for w in loads])
        + "\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.md").write_text(text)
    (args.out / f"{args.label}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
