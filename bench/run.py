#!/usr/bin/env python3
"""flask-asgi's benchmark suite: one command builds the peers' venv and runs every
candidate on the same workloads.

    python3 bench/run.py              # full run: ~8 s x 3 passes per cell
    python3 bench/run.py --quick      # smoke run: 2 s x 1 pass
    python3 bench/run.py --only hello,sleep-1000,flask-asgi,quart

See bench/README.md. Started with any Python 3.11+, the script builds bench/.venv (the
project itself plus the peers), installs wrk with apt if it is missing, then re-runs itself
with the venv's Python. Each server runs as a subprocess in its own process group, pinned
to CPU 0; wrk runs pinned to CPU 1; every server is stopped at the end of its cell, and on
Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
APPS = BENCH / "apps"
WRK_DIR = BENCH / "wrk"
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"
DOCS_PAGE = ROOT / "docs" / "performance.md"

REQUIREMENTS = [
    "quart",
    "starlette",
    "gunicorn",
    "uvicorn[standard]",
    "flask[async]",
    "httpx",
    "aiohttp",
    "jinja2",
    "matplotlib",
]
SERVER_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"
UPSTREAM_PORT = 9100
FIRST_PORT = 9200
WRK_TIMEOUT = "5s"


# =========================================================================================
# Setup: venv and wrk (runs under whatever python3 started the script)
# =========================================================================================


def ensure_setup() -> None:
    stamp = VENV / ".bench-requirements"
    wanted = hashlib.sha256(
        "\n".join([str(ROOT), *REQUIREMENTS, (ROOT / "pyproject.toml").read_text()]).encode()
    ).hexdigest()
    if not (VENV_PY.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"[setup] building {VENV.relative_to(ROOT)} ...", flush=True)
        if not VENV_PY.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", str(ROOT), *REQUIREMENTS], check=True)
        stamp.write_text(wanted)
    if shutil.which("wrk") is None:
        print("[setup] wrk not found: installing it with apt-get ...", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True)
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is required")


# =========================================================================================
# Candidates and workloads
# =========================================================================================


@dataclass(frozen=True)
class Candidate:
    key: str
    label: str
    server: str  # "uvicorn" or "gunicorn"
    target: str  # module:attribute in bench/apps


CANDIDATES = [
    Candidate("flask-asgi", "flask-asgi (uvicorn)", "uvicorn", "flask_asgi_app:asgi"),
    Candidate("quart", "Quart (uvicorn)", "uvicorn", "quart_app:app"),
    Candidate("flask-gthread", "Flask sync (gunicorn gthread)", "gunicorn", "flask_sync_app:app"),
    Candidate(
        "flask-async-gthread", "Flask async (gunicorn gthread)", "gunicorn", "flask_async_app:app"
    ),
    Candidate("starlette", "Starlette (uvicorn)", "uvicorn", "starlette_app:app"),
    Candidate("bare-asgi", "bare ASGI (uvicorn)", "uvicorn", "bare_app:app"),
]
BY_KEY = {c.key: c for c in CANDIDATES}
ALL = [c.key for c in CANDIDATES]
ASYNC_ONLY = ["flask-asgi", "quart", "starlette", "bare-asgi"]


@dataclass(frozen=True)
class Cell:
    """How one candidate runs one workload."""

    path: str
    threads: int = 32  # gunicorn --threads
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    connections: int
    cells: dict[str, Cell]
    script: str = "report.lua"
    check: str = ""  # name of the response check
    baseline: tuple[str, ...] = ("quart", "starlette")  # ratio columns


def same_for(keys: list[str], path: str, threads: int = 32) -> dict[str, Cell]:
    return {key: Cell(path, threads) for key in keys}


WORKLOADS = [
    Workload("hello", "GET /hello (c=64)", 64, same_for(ALL, "/hello"), check="hello"),
    Workload(
        "sleep-256", "GET /sleep, 50 ms (c=256)", 256, same_for(ALL, "/sleep", 256), check="ok"
    ),
    Workload(
        "sleep-1000", "GET /sleep, 50 ms (c=1000)", 1000, same_for(ALL, "/sleep", 256), check="ok"
    ),
    Workload(
        "echo",
        "POST /echo, 1 KB JSON (c=64)",
        64,
        same_for(ALL, "/echo"),
        script="echo.lua",
        check="echo",
    ),
    Workload(
        "fanout-httpx",
        "GET /fanout?client=httpx, 5 x 20 ms upstream (c=100)",
        100,
        same_for(ASYNC_ONLY, "/fanout?client=httpx"),
        check="fanout",
    ),
    Workload(
        "fanout-aiohttp",
        "GET /fanout-aiohttp, 5 x 20 ms upstream (c=100)",
        100,
        same_for(ASYNC_ONLY, "/fanout-aiohttp"),
        check="fanout",
    ),
    Workload(
        "template",
        "GET /template, 50 rows (c=64)",
        64,
        same_for(ALL, "/template"),
        check="template",
    ),
    Workload(
        "sync-hello",
        "sync `def` hello (c=64)",
        64,
        {
            "flask-asgi": Cell(
                "/sync-hello", env={"FLASK_ASGI_THREADS": "32"}, note="/sync-hello, 32 threads"
            ),
            "flask-gthread": Cell("/hello", 32, note="/hello, 32 threads"),
        },
        check="hello",
        baseline=("flask-gthread",),
    ),
    Workload(
        "sync-sleep-256",
        "sync `def` view, time.sleep(0.05) (c=256)",
        256,
        {
            "flask-asgi": Cell(
                "/sync-sleep", env={"FLASK_ASGI_THREADS": "256"}, note="/sync-sleep, 256 threads"
            ),
            "flask-gthread": Cell("/sleep", 256, note="/sleep, 256 threads"),
        },
        check="ok",
        baseline=("flask-gthread",),
    ),
]
BY_WORKLOAD = {w.key: w for w in WORKLOADS}


def server_command(candidate: Candidate, cell: Cell, port: int) -> list[str]:
    binary = VENV / "bin" / candidate.server
    if candidate.server == "uvicorn":
        return [
            str(binary), candidate.target,
            "--app-dir", str(APPS),
            "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--http", "httptools",
            "--lifespan", "on", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return [
        str(binary), candidate.target,
        "--chdir", str(APPS),
        "--bind", f"{HOST}:{port}",
        "--workers", "1", "--worker-class", "gthread", "--threads", str(cell.threads),
        "--worker-connections", "2000", "--backlog", "2048",
        "--log-level", "warning",
    ]  # fmt: skip


def display_command(candidate: Candidate, cell: Cell) -> str:
    cmd = server_command(candidate, cell, 0)
    cmd[0] = Path(cmd[0]).name
    text = " ".join(cmd).replace(str(APPS), "bench/apps").replace(f"{HOST}:0", f"{HOST}:PORT")
    text = text.replace("--port 0", "--port PORT")
    env = " ".join(f"{k}={v}" for k, v in cell.env.items())
    return f"taskset -c {SERVER_CPU} {env + ' ' if env else ''}{text}"


# =========================================================================================
# Processes: start, stop, sample
# =========================================================================================

_live: dict[int, subprocess.Popen[bytes]] = {}


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: stopped as a whole
        )
    _live[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a process group started by spawn(): SIGTERM, then SIGKILL after ``grace``."""
    _live.pop(proc.pid, None)
    if proc.poll() is not None:
        _killpg(proc.pid, signal.SIGKILL)  # leftovers of a group whose leader is gone
        return
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    for proc in list(_live.values()):
        stop(proc, grace=3.0)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            status, _ = http_get(port, "/hello", timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout:.0f} s")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def http_get(
    port: int, path: str, method: str = "GET", body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return pids


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def status_numbers(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, Threads) of one process."""
    rss = threads = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


UPSTREAM_PID = 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy() -> dict[str, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]  # idle + iowait
                out[name[3:]] = (sum(numbers[:8]) - idle, sum(numbers[:8]))
    return out


class Sampler(threading.Thread):
    """Every 100 ms: RSS and thread count summed over the server's process tree (gunicorn's
    master and worker), and CPU ticks per process for the run's CPU %."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.halt = threading.Event()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.peak_rss_kb = 0
        self.peak_threads = 0
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.cores_before = cpu_busy()
        self.upstream_before = (cpu_ticks(UPSTREAM_PID) or 0) if UPSTREAM_PID else 0
        self.self_before = time.process_time()
        self.children_before = _children_cpu()
        self._ticks(initial=True)

    def _ticks(self, initial: bool = False) -> None:
        for pid in process_tree(self.root):
            ticks = cpu_ticks(pid)
            if ticks is None:
                continue
            if initial:
                self.first[pid] = ticks
            else:
                self.first.setdefault(pid, 0)  # a process born during the run
            self.last[pid] = ticks

    def sample(self) -> None:
        rss = threads = 0
        for pid in process_tree(self.root):
            r, t = status_numbers(pid)
            rss += r
            threads += t
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_threads = max(self.peak_threads, threads)
        self._ticks()

    def run(self) -> None:
        self.started_at = time.monotonic()
        while not self.halt.wait(self.interval):
            self.sample()

    def finish(self) -> dict[str, float]:
        self.halt.set()
        self.join()
        self.sample()
        self.stopped_at = time.monotonic()
        ticks = sum(self.last[pid] - self.first.get(pid, 0) for pid in self.last)
        wall = max(self.stopped_at - self.started_at, 1e-6)
        after = cpu_busy()

        def busy(core: str) -> float:
            b0, t0 = self.cores_before.get(core, (0, 0))
            b1, t1 = after.get(core, (0, 0))
            return 100.0 * (b1 - b0) / max(t1 - t0, 1)

        cpu_percent = 100.0 * ticks / CLK_TCK / wall
        # Our own load-side processes, all on the load core: the upstream, this runner
        # and wrk (a reaped child by now: its CPU time is in RUSAGE_CHILDREN).
        upstream = (
            ((cpu_ticks(UPSTREAM_PID) or 0) - self.upstream_before) / CLK_TCK
            if UPSTREAM_PID
            else 0.0
        )
        ours = upstream + time.process_time() - self.self_before
        ours += _children_cpu() - self.children_before
        load_ours = 100.0 * ours / wall
        return {
            "cpu_percent": cpu_percent,
            "server_core_busy": busy(SERVER_CPU),
            # CPU time on the server's core that was not the server's: other processes.
            "foreign_on_server_core": max(0.0, busy(SERVER_CPU) - cpu_percent),
            "load_core_busy": busy(LOAD_CPU),
            "load_side_cpu": load_ours,
            "foreign_on_load_core": max(0.0, busy(LOAD_CPU) - load_ours),
            "peak_rss_mb": self.peak_rss_kb / 1024,
            "peak_threads": self.peak_threads,
        }


# =========================================================================================
# One cell: start the server, check, warm up, measure, stop
# =========================================================================================

PAYLOAD = (WRK_DIR / "payload.json").read_bytes().strip()


def check_response(kind: str, status: int, body: bytes) -> str:
    """'' when the response is what every app must answer, else what is wrong."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    try:
        if kind == "hello" and body != b"Hello, World!":
            return f"body {body[:100]!r}"
        if kind == "ok" and body != b"OK":
            return f"body {body[:100]!r}"
        if kind == "echo" and json.loads(body) != json.loads(PAYLOAD):
            return "echo differs from the payload"
        if kind == "fanout":
            data = json.loads(body)
            if len(data["results"]) != 5 or not all(r["ok"] for r in data["results"]):
                return f"fanout body {body[:200]!r}"
        if kind == "template" and body.count(b"<tr class=") != 50:
            return "template does not have 50 rows"
    except (ValueError, KeyError, TypeError) as exc:
        return f"bad body ({exc}): {body[:200]!r}"
    return ""


def run_wrk(port: int, workload: Workload, cell: Cell, seconds: int, log: Path) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", LOAD_CPU, "wrk",
        "-t1", "-c", str(workload.connections), "-d", f"{seconds}s",
        "--timeout", WRK_TIMEOUT, "--latency",
        "-s", str(WRK_DIR / workload.script),
        f"http://{HOST}:{port}{cell.path}",
    ]  # fmt: skip
    proc = spawn(cmd, log)
    try:
        proc.wait(seconds + 60)
    finally:
        stop(proc, grace=2.0)
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON ") :])
    raise RuntimeError(f"wrk printed no summary (see {log}):\n{text[-2000:]}")


_next_port = FIRST_PORT
_retries = [0]


def disturbance(usage: dict[str, float]) -> str:
    """Why other processes on the machine may have disturbed a measurement ('' if not)."""
    if usage["foreign_on_server_core"] > 10:
        return f"{usage['foreign_on_server_core']:.0f} % of the server core used by others"
    if usage["load_core_busy"] > 90 and usage["foreign_on_load_core"] > 10:
        return (
            f"load core {usage['load_core_busy']:.0f} % busy, "
            f"{usage['foreign_on_load_core']:.0f} % by others"
        )
    return ""


def run_cell(
    workload: Workload, candidate: Candidate, pass_no: int, args: argparse.Namespace
) -> dict[str, Any]:
    global _next_port
    cell = workload.cells[candidate.key]
    port = _next_port
    _next_port += 1
    logs = RAW / "logs"
    stem = f"{workload.key}.{candidate.key}.p{pass_no}"
    env = {
        "PYTHONPATH": str(APPS),
        "PYTHONUNBUFFERED": "1",
        "BENCH_UPSTREAM": f"http://{HOST}:{UPSTREAM_PORT}",
        **cell.env,
    }
    cmd = ["taskset", "-c", SERVER_CPU, *server_command(candidate, cell, port)]
    server = spawn(cmd, logs / f"{stem}.server.log", env)
    result: dict[str, Any] = {"pass": pass_no, "port": port}
    try:
        wait_ready(port, server)
        if workload.check == "echo":
            status, body = http_get(port, cell.path, "POST", PAYLOAD)
        else:
            status, body = http_get(port, cell.path)
        problem = check_response(workload.check, status, body)
        if problem:
            result["check_failed"] = problem
            print(f"      ! response check failed: {problem}", flush=True)
        if args.warmup > 0:
            run_wrk(port, workload, cell, args.warmup, logs / f"{stem}.warmup.log")
        for attempt in range(2):
            sampler = Sampler(server.pid)
            sampler.start()
            try:
                wrk = run_wrk(port, workload, cell, args.duration, logs / f"{stem}.wrk.log")
            finally:
                usage = sampler.finish()
            disturbed = disturbance(usage)
            if not disturbed or attempt == 1 or _retries[0] >= args.max_retries:
                break
            _retries[0] += 1
            result.setdefault("discarded", []).append(
                {"reason": disturbed, "rps": wrk["requests"] * 1e6 / wrk["duration_us"], **usage}
            )
            print(f" [disturbed: {disturbed}; measuring again]", end="", flush=True)
        if disturbed:
            result["disturbed"] = disturbed
        if server.poll() is not None:
            result["server_died"] = server.returncode
        errors = wrk["errors"]
        seconds = wrk["duration_us"] / 1e6
        lat = wrk["latency_us"]
        some = wrk["requests"] > 0  # no completed request: no latency to report

        def ms(key: str) -> float | None:
            return lat[key] / 1000 if some else None

        result.update(
            rps=wrk["requests"] / seconds,
            requests=wrk["requests"],
            seconds=seconds,
            p50_ms=ms("p50"),
            p99_ms=ms("p99"),
            max_ms=ms("max"),
            mean_ms=ms("mean"),
            errors=sum(errors.values()),
            error_detail=errors,
            **usage,
        )
    except Exception as exc:  # recorded: one failing cell must not lose the whole run
        result["failed"] = f"{type(exc).__name__}: {exc}"
        print(f"      ! cell failed: {result['failed']}", flush=True)
    finally:
        stop(server)
    return result


# =========================================================================================
# Aggregation, report, chart
# =========================================================================================

METRICS = [
    "rps", "p50_ms", "p99_ms", "max_ms", "cpu_percent", "peak_rss_mb", "peak_threads",
    "server_core_busy", "load_core_busy", "foreign_on_server_core", "load_side_cpu",
    "foreign_on_load_core",
]  # fmt: skip


def summarize(passes: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [p for p in passes if "rps" in p]
    summary: dict[str, Any] = {"passes": len(passes), "passes_ok": len(ok)}
    if not ok:
        return summary
    for metric in METRICS:
        values = [p[metric] for p in ok if p.get(metric) is not None]
        summary[metric] = statistics.median(values) if values else None
    rps = [p["rps"] for p in ok]
    summary["rps_min"], summary["rps_max"] = min(rps), max(rps)
    summary["errors"] = sum(p["errors"] for p in ok)
    summary["requests"] = sum(p["requests"] for p in ok)
    detail: dict[str, int] = {}
    for p in ok:
        for k, v in p["error_detail"].items():
            detail[k] = detail.get(k, 0) + v
    summary["error_detail"] = detail
    return summary


def ratio(results: dict[str, Any], workload: str, a: str, b: str) -> float | None:
    cells = results.get(workload, {})
    x = cells.get(a, {}).get("summary", {}).get("rps")
    y = cells.get(b, {}).get("summary", {}).get("rps")
    return x / y if x and y else None


def get(results: dict[str, Any], workload: str, cand: str, metric: str) -> Any:
    return results.get(workload, {}).get(cand, {}).get("summary", {}).get(metric)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, computed from this run's medians."""
    F = "flask-asgi"
    targets: list[dict[str, Any]] = []

    def add(name: str, need: str, measured: str, ok: bool | None) -> None:
        targets.append({"target": name, "need": need, "measured": measured, "pass": ok})

    def fmt(x: float | None, suffix: str = "×") -> str:
        return "n/a" if x is None else f"{x:.2f}{suffix}"

    def both(*conditions: bool | None) -> bool | None:
        return None if any(c is None for c in conditions) else all(conditions)

    q, s = ratio(results, "hello", F, "quart"), ratio(results, "hello", F, "starlette")
    add("hello vs Quart", "≥ 1.8× Quart", fmt(q), None if q is None else q >= 1.8)
    add("hello vs Starlette", "≥ 0.5× Starlette", fmt(s), None if s is None else s >= 0.5)

    q = ratio(results, "sleep-1000", F, "quart")
    p99 = get(results, "sleep-1000", F, "p99_ms")
    threads = get(results, "sleep-1000", F, "peak_threads")
    add("sleep c=1000 throughput", "≥ 2× Quart", fmt(q), None if q is None else q >= 2)
    add(
        "sleep c=1000 p99",
        "≤ 300 ms",
        "n/a" if p99 is None else f"{p99:,.0f} ms",
        None if p99 is None else p99 <= 300,
    )
    add(
        "sleep c=1000 server threads",
        "≤ 16",
        "n/a" if threads is None else f"{threads:.0f}",
        None if threads is None else threads <= 16,
    )
    q = ratio(results, "echo", F, "quart")
    add("echo", "≥ 2× Quart", fmt(q), None if q is None else q >= 2)
    s = ratio(results, "fanout-aiohttp", F, "starlette")
    add("fanout (aiohttp)", "≥ 0.9× Starlette", fmt(s), None if s is None else s >= 0.9)
    q = ratio(results, "template", F, "quart")
    add("template", "≥ 1.5× Quart", fmt(q), None if q is None else q >= 1.5)
    g = ratio(results, "sync-hello", F, "flask-gthread")
    add("sync hello", "≥ 1.5× Flask gunicorn gthread", fmt(g), None if g is None else g >= 1.5)
    g = ratio(results, "sync-sleep-256", F, "flask-gthread")
    add(
        "sync sleep c=256",
        "within 10% of gunicorn gthread 256 (≥ 0.9×)",
        fmt(g),
        None if g is None else g >= 0.9,
    )
    return targets


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    lscpu = cmd("lscpu")
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line), ""
    )
    packages = {}
    for name in [
        "flask-asgi", "flask", "werkzeug", "greenlet", "quart", "starlette", "uvicorn",
        "uvloop", "httptools", "gunicorn", "asgiref", "httpx", "httpcore", "aiohttp",
        "jinja2",
    ]:  # fmt: skip
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "-"
    wrk_version = cmd("wrk", "--version").splitlines()
    commit = cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = cmd("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    os_release = ""
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_release = line.split("=", 1)[1].strip('"')
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "os": os_release,
        "python": platform.python_version(),
        "wrk": wrk_version[0] if wrk_version else "",
        "packages": packages,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


def source_state() -> dict[str, str]:
    """A hash of each file under src/: the code under test (the install is editable)."""
    return {
        str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted((ROOT / "src").rglob("*.py"))
    }


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def write_markdown(data: dict[str, Any], path: Path) -> str:
    results = data["results"]
    cfg = data["config"]
    m = data["machine"]
    lines = [
        "# flask-asgi benchmark results",
        "",
        f"Run of {data['started']} ({data['elapsed_s'] / 60:.1f} min): "
        f"{cfg['duration']} s per measurement after a {cfg['warmup']} s warm-up, "
        f"{cfg['passes']} interleaved pass(es), medians reported. "
        f"Generated by `python3 bench/run.py{cfg['argv']}`.",
        "",
        "## Summary: requests/s (median of passes)",
        "",
    ]
    lines += summary_table(data)
    lines += ["", "## Targets (from this run)", ""]
    lines += targets_table(data["targets"])
    lines += ["", "## Per workload", ""]
    lines += [
        "Ratios are requests/s divided by the peer's requests/s in this run. Latencies are "
        "wrk's (medians of the passes' p50/p99/max). Errors are wrk's socket errors "
        "(connect/read/write/timeout) plus non-2xx/3xx responses, summed over all passes. "
        "CPU % is the server's utime+stime over the measured run (100 % = the one core it "
        "is pinned to); RSS and threads are peaks sampled every 100 ms, summed over the "
        "server's processes (gunicorn: master + worker). “load core %” is how busy CPU "
        f"{LOAD_CPU} was (wrk, the fanout upstream, this runner): near 100 % the load side, "
        "not the server, may be the limit.",
        "",
    ]
    for w in WORKLOADS:
        if w.key not in results:
            continue
        lines += [f"### {w.key}: {w.title}", ""]
        base_cols = [f"× {BY_KEY[b].label.split(' (')[0]}" for b in w.baseline]
        if w.baseline == ("flask-gthread",):
            base_cols = ["× gunicorn gthread"]
        header = ["candidate", "req/s", "range", *base_cols, "p50 ms", "p99 ms", "max ms",
                  "errors", "CPU %", "RSS MB", "threads", "load core %"]  # fmt: skip
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|")
        for c in CANDIDATES:
            entry = results[w.key].get(c.key)
            label = c.label
            if entry is None:
                if w.key.startswith("fanout"):
                    lines.append("| " + " | ".join([label] + ["–"] * (len(header) - 1)) + " |")
                continue
            cell = w.cells[c.key]
            if cell.note:
                label += f" `{cell.note}`"
            s = entry["summary"]
            if "rps" not in s:
                fail = next((p.get("failed") for p in entry["passes"] if "failed" in p), "")
                lines.append(
                    "| " + " | ".join([label, f"failed: {fail}"] + [""] * (len(header) - 2)) + " |"
                )
                continue
            ratios = [fmt_num(ratio(results, w.key, c.key, b), 2) for b in w.baseline]
            errors = fmt_num(s["errors"])
            if s["errors"]:
                detail = ", ".join(f"{k} {v}" for k, v in s["error_detail"].items() if v)
                errors += f" ({detail})"
            row = [
                label,
                fmt_num(s["rps"]),
                f"{fmt_num(s['rps_min'])}–{fmt_num(s['rps_max'])}",
                *ratios,
                fmt_num(s["p50_ms"], 1),
                fmt_num(s["p99_ms"], 1),
                fmt_num(s["max_ms"], 0),
                errors,
                fmt_num(s["cpu_percent"], 0),
                fmt_num(s["peak_rss_mb"], 0),
                fmt_num(s["peak_threads"], 0),
                fmt_num(s["load_core_busy"], 0),
            ]
            lines.append("| " + " | ".join(row) + " |")
        problems = [
            f"{c}: pass {p['pass']}: {p.get('check_failed') or p.get('failed')}"
            for c, e in results[w.key].items()
            for p in e["passes"]
            if "check_failed" in p or "failed" in p
        ]
        if problems:
            lines += ["", "Problems: " + "; ".join(problems)]
        lines.append("")
    noisy, retried = [], []
    for w in WORKLOADS:
        for c, e in results.get(w.key, {}).items():
            for p in e["passes"]:
                if p.get("discarded"):
                    retried.append(f"{w.key}/{c} pass {p['pass']}")
                if "rps" not in p:
                    continue
                if p["foreign_on_server_core"] > 5 or p["load_core_busy"] > 90:
                    noisy.append(
                        f"{w.key}/{c} pass {p['pass']} (others on the server core "
                        f"{p['foreign_on_server_core']:.0f} %, load core "
                        f"{p['load_core_busy']:.0f} % busy of which "
                        f"{p['foreign_on_load_core']:.0f} % others)"
                    )
    lines += ["## Noise", ""]
    lines += [
        "The machine was not otherwise idle. A measurement is taken again (once) when other "
        "processes used more than 10 % of the server core, or more than 10 % of a load core "
        "that was over 90 % busy. Measured again: "
        + (", ".join(retried) if retried else "none")
        + ". Kept measurements where others used more than 5 % of the server core, or the "
        "load core was over 90 % busy: " + ("; ".join(noisy) if noisy else "none") + ".",
        "",
    ]
    lines += ["## Machine", ""]
    lines += [
        f"* CPU: {m['cpu_model']}, {m['cpus']} cores ({m['memory_gb']} GB RAM); "
        f"{m['os']}, kernel {m['kernel']}",
        f"* Server pinned to CPU {SERVER_CPU}; wrk (`-t1`), the fanout upstream and this "
        f"runner pinned to CPU {LOAD_CPU}; loopback only",
        f"* Python {m['python']}; {m['wrk']}",
        "* Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"* flask-asgi commit: {m['commit']}"
        + (f". **{m['code_changes']}**" if m.get("code_changes") else ""),
        f"* Date: {data['started']}",
        "",
        "## How each candidate is run",
        "",
    ]
    seen = set()
    for w in WORKLOADS:
        for key, cell in w.cells.items():
            text = display_command(BY_KEY[key], cell)
            if text not in seen:
                seen.add(text)
                lines.append(f"* {BY_KEY[key].label}: `{text}`")
    lines += [
        "",
        "Every server: one worker process, Python's `PYTHONPATH=bench/apps`. The flask-asgi "
        "app holds both the async views and the two sync views, so flask-asgi matches the "
        "URL per request to pick the loop or the worker pool.",
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def summary_table(data: dict[str, Any]) -> list[str]:
    results = data["results"]
    workloads = [w for w in WORKLOADS if w.key in results]
    header = ["workload", *[c.label for c in CANDIDATES], "flask-asgi × Quart",
              "flask-asgi × Starlette"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * 8) + "|"]
    for w in workloads:
        row = [f"{w.key} (c={w.connections})"]
        for c in CANDIDATES:
            row.append(fmt_num(get(results, w.key, c.key, "rps")))
        if w.baseline == ("flask-gthread",):
            g = ratio(results, w.key, "flask-asgi", "flask-gthread")
            row += [f"{fmt_num(g, 2)} × gunicorn", ""]
        else:
            row += [
                fmt_num(ratio(results, w.key, "flask-asgi", "quart"), 2),
                fmt_num(ratio(results, w.key, "flask-asgi", "starlette"), 2),
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "“–”: not applicable or not run (fanout needs a client shared between requests, "
        "which a WSGI app cannot keep; the sync rows compare flask-asgi's `def` views with "
        "sync Flask on gunicorn).",
    ]
    return lines


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | needed | measured | result |", "|---|---|--:|---|"]
    for t in targets:
        verdict = {True: "pass", False: "**fail**", None: "not measured"}[t["pass"]]
        lines.append(f"| {t['target']} | {t['need']} | {t['measured']} | {verdict} |")
    return lines


def write_chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    workloads = [w for w in WORKLOADS if w.key in results]
    fig, ax = plt.subplots(figsize=(13, 5.5), dpi=110)
    width = 0.8 / len(CANDIDATES)
    colors = ["#d62728", "#1f77b4", "#7f7f7f", "#bcbd22", "#2ca02c", "#9467bd"]
    for i, c in enumerate(CANDIDATES):
        xs, ys = [], []
        for j, w in enumerate(workloads):
            value = get(results, w.key, c.key, "rps")
            if value:
                xs.append(j + (i - (len(CANDIDATES) - 1) / 2) * width)
                ys.append(value)
        ax.bar(xs, ys, width, label=c.label, color=colors[i % len(colors)])
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (median, log scale)")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(
        [
            f"{w.key}\nc={w.connections}"
            + ("\n(sync def views)" if w.key.startswith("sync") else "")
            for w in workloads
        ],
        fontsize=8,
    )
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc="upper right")
    m = data["machine"]
    ax.set_title(
        f"flask-asgi vs peers: one worker process on 1 core ({m['cpu_model']}), "
        f"{data['config']['duration']} s × {data['config']['passes']} passes, "
        f"{data['started'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_docs(data: dict[str, Any]) -> None:
    """Replace the generated block of docs/performance.md with this run's tables."""
    if not DOCS_PAGE.exists():
        print(f"[docs] {DOCS_PAGE} does not exist: not updated")
        return
    text = DOCS_PAGE.read_text()
    if BEGIN not in text or END not in text:
        print(f"[docs] no {BEGIN} ... {END} block in {DOCS_PAGE}: not updated")
        return
    m = data["machine"]
    cfg = data["config"]
    block = [
        BEGIN,
        "",
        f"Latest run: {data['started']} on {m['cpu_model']} "
        f"({m['cpus']} cores; server on one core, wrk on the other), Python {m['python']}. "
        f"{cfg['duration']} s per measurement after a {cfg['warmup']} s warm-up, "
        f"{cfg['passes']} interleaved passes, medians. Code under test: flask-asgi "
        f"{m['commit']}."
        + (f" Note: {m['code_changes']}." if m.get("code_changes") else "")
        + " Full tables (latency, errors, CPU, memory, threads, package versions): "
        "[bench/results/results.md](../bench/results/results.md).",
        "",
        "![requests/s per workload and candidate](../bench/results/chart.png)",
        "",
        "### Requests/s",
        "",
        *summary_table(data),
        "",
        "### The first targets (frameworks on uvicorn)",
        "",
        "The current targets, against the inline-Flask ceiling and on every server, come"
        " from `bench/servers.py`, `bench/memory.py` and `bench/openloop.py`: see"
        " [Per server, the ceiling, and the targets of issue 10]"
        "(#per-server-the-ceiling-and-the-targets-of-issue-10).",
        "",
        *targets_table(data["targets"]),
        "",
        END,
    ]
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    DOCS_PAGE.write_text(before + "\n".join(block) + after)
    print(f"[docs] updated {DOCS_PAGE.relative_to(ROOT)}")


# =========================================================================================
# Main
# =========================================================================================


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark flask-asgi against its peers (see bench/README.md)."
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=None,
        help="seconds per measured run (default 8; 2 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds of discarded warm-up per cell (default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=None,
        help="interleaved passes per workload (default 3; 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s x 1 pass")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workloads and/or candidates to run, e.g. hello,echo,flask-asgi,"
        f"quart. Workloads: {', '.join(BY_WORKLOAD)}. Candidates: {', '.join(BY_KEY)}.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default bench/results for a full run, bench/results/raw/partial "
        "for --quick or --only, so a partial run never replaces the published results)",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="do not update docs/performance.md (only full runs update it)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=20,
        help="measurements run again, once per cell, when other processes used more than "
        "10 %% of the server core or saturated the load core (default 20 per run)",
    )
    parser.add_argument(
        "--skip-setup", action="store_true", help="do not check bench/.venv and wrk"
    )
    parser.add_argument("--list", action="store_true", help="list workloads and candidates")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite results.md, chart.png (and the docs block, for "
        "bench/results) from the results.json in --out",
    )
    args = parser.parse_args(argv)  # fmt: skip
    args.duration = args.duration or (2 if args.quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.passes = args.passes or (1 if args.quick else 3)
    tokens = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = [t for t in tokens if t not in BY_WORKLOAD and t not in BY_KEY]
    if unknown:
        parser.error(
            f"unknown --only name(s): {', '.join(unknown)}; workloads: {', '.join(BY_WORKLOAD)};"
            f" candidates: {', '.join(BY_KEY)}"
        )
    args.workloads = [t for t in tokens if t in BY_WORKLOAD] or list(BY_WORKLOAD)
    args.candidates = [t for t in tokens if t in BY_KEY] or list(BY_KEY)
    args.partial = args.quick or bool(tokens)
    if args.out is None:
        args.out = RAW / "partial" if args.partial else RESULTS
    return args


def plan(args: argparse.Namespace) -> list[tuple[Workload, int, list[Candidate]]]:
    """Workload by workload; within a workload, pass 1 runs every candidate, then pass 2...
    The candidates' order rotates from pass to pass."""
    steps = []
    for key in args.workloads:
        w = BY_WORKLOAD[key]
        cands = [BY_KEY[k] for k in args.candidates if k in w.cells]
        if not cands:
            continue
        for p in range(1, args.passes + 1):
            shift = (p - 1) % len(cands)
            steps.append((w, p, cands[shift:] + cands[:shift]))
    return steps


def main(argv: list[str]) -> int:
    global UPSTREAM_PID
    args = parse_args(argv)
    if args.list:
        for w in WORKLOADS:
            print(f"{w.key:16} {w.title}: {', '.join(w.cells)}")
        return 0
    if args.render:
        data = json.loads((args.out / "results.json").read_text())
        data["targets"] = evaluate_targets(data["results"])
        (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
        write_markdown(data, args.out / "results.md")
        write_chart(data, args.out / "chart.png")
        if args.out.resolve() == RESULTS.resolve() and not args.no_docs:
            update_docs(data)
        print(f"[bench] rendered {args.out}/results.md and chart.png from results.json")
        return 0
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # keep the runner off the server's core
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    steps = plan(args)
    cells = sum(len(c) for _, _, c in steps)
    estimate = cells * (args.duration + args.warmup + 2.0)
    print(
        f"[bench] {cells} cells ({len(args.workloads)} workloads, {args.passes} pass(es)), "
        f"{args.duration} s + {args.warmup} s warm-up each: about {estimate / 60:.0f} min",
        flush=True,
    )
    RAW.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now().astimezone().replace(microsecond=0)
    machine = machine_info()  # at the start: the commit under test
    sources = source_state()
    t0 = time.monotonic()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: dict[str, dict[str, Any]] = {}
    done = 0
    try:
        upstream = spawn(
            ["taskset", "-c", LOAD_CPU, str(VENV_PY), str(BENCH / "upstream.py"),
             "--port", str(UPSTREAM_PORT)],
            RAW / "logs" / "upstream.log",
        )  # fmt: skip
        wait_port(UPSTREAM_PORT)
        UPSTREAM_PID = upstream.pid
        for w, pass_no, cands in steps:
            for c in cands:
                done += 1
                elapsed = time.monotonic() - t0
                print(
                    f"[{done:3}/{cells} {elapsed / 60:4.1f} min] {w.key:15} pass {pass_no} "
                    f"{c.key:20}",
                    end="",
                    flush=True,
                )
                r = run_cell(w, c, pass_no, args)
                entry = results.setdefault(w.key, {}).setdefault(c.key, {"passes": []})
                entry["passes"].append(r)
                if "rps" in r:
                    print(
                        f" {r['rps']:9,.0f} req/s  p99 {fmt_num(r['p99_ms'], 1):>7} ms  "
                        f"err {r['errors']:<6} cpu {r['cpu_percent']:3.0f}%  "
                        f"rss {r['peak_rss_mb']:4.0f} MB  thr {r['peak_threads']:3}  "
                        f"load core {r['load_core_busy']:3.0f}%",
                        flush=True,
                    )
                else:
                    print(" failed", flush=True)
        if upstream.poll() is not None:
            print("[bench] warning: the upstream server died during the run")
    except KeyboardInterrupt:
        print("\n[bench] interrupted: stopping servers", flush=True)
        stop_all()
        return 130
    finally:
        stop_all()

    for w_results in results.values():
        for entry in w_results.values():
            entry["summary"] = summarize(entry["passes"])
    elapsed = time.monotonic() - t0
    data = {
        "started": started.isoformat(),
        "elapsed_s": round(elapsed, 1),
        "config": {
            "duration": args.duration,
            "warmup": args.warmup,
            "passes": args.passes,
            "workloads": args.workloads,
            "candidates": args.candidates,
            "argv": "".join(f" {a}" for a in argv),
            "wrk": f"taskset -c {LOAD_CPU} wrk -t1 -c C -d {args.duration}s "
            f"--timeout {WRK_TIMEOUT} --latency -s bench/wrk/SCRIPT URL",
        },
        "machine": machine,
        "commands": {
            w.key: {k: display_command(BY_KEY[k], cell) for k, cell in w.cells.items()}
            for w in WORKLOADS
            if w.key in results
        },
        "results": results,
    }
    after = source_state()
    changed = sorted(f for f in sources.keys() | after.keys() if sources.get(f) != after.get(f))
    if changed:
        machine["code_changes"] = (
            f"{', '.join(changed)} changed during the run: cells started after the change "
            "ran the new code"
        )
        print(f"[bench] warning: {machine['code_changes']}")
    data["targets"] = evaluate_targets(results)
    (args.out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    text = write_markdown(data, args.out / "results.md")
    write_chart(data, args.out / "chart.png")
    if not args.partial and not args.no_docs:
        update_docs(data)
    print()
    print(text.split("## Per workload")[0])
    print(f"[bench] done in {elapsed / 60:.1f} min: {args.out}/results.md, results.json, chart.png")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if os.environ.get("FLASK_ASGI_BENCH_VENV") != "1":
        if not {"--skip-setup", "--list", "--render", "-h", "--help"} & set(argv):
            ensure_setup()
        if VENV_PY.exists():
            env = {**os.environ, "FLASK_ASGI_BENCH_VENV": "1"}
            os.execve(str(VENV_PY), [str(VENV_PY), __file__, *argv], env)
    sys.exit(main(argv))
