"""An unchanged sync Flask app on the servers it runs on today, and on flask-asgi:
``python bench/sync_servers.py``.

Issue 20 ("sync Flask apps: never worse than on their current server"). The same app,
apps/flask_sync_app.py (plain ``def`` views: ``/hello``, ``POST /echo`` of a 1 KB JSON
body, ``/sleep``: ``time.sleep(0.05)``, standing for a database or HTTP wait), served by

* gunicorn ``-k gthread --threads 32`` (1 worker),
* gunicorn ``-k gevent`` (1 worker; gunicorn's gevent worker monkey-patches the process
  before it loads the app, so ``time.sleep`` yields, as gevent users run it),
* granian ``--interface wsgi`` (1 worker, granian's defaults otherwise),
* flask-asgi: ``flask --app flask_sync_app serve --server uvicorn`` and ``--server granian``
  (the views run in flask-asgi's worker-thread pool, FLASK_ASGI_THREADS), and ``--server
  granian --interface wsgi`` (granian's WSGI threads call flask-asgi's WSGI entry),
* the inline ceiling (hello and echo only): NOT a runtime, the same views called inline on
  uvicorn's loop (apps/inline_flask_app.py), the most an adapter can reach on uvicorn.

Workloads: hello and echo at c=64, and 1,000 concurrent clients on the 50 ms view. Each
server is one process on CPU 0, wrk (``--timeout 10s``) on CPU 1. Passes interleave the
candidates (each pass runs every row of a workload once, in turn; the order rotates
between passes), and each row reports its median pass; the ratios to the peers are given
per pass too (row and peer measured minutes apart, in the same pass), so a ratio is quoted
from one run with its spread. The non-2xx responses and socket errors of every pass are
counted. A cell is measured again when other processes used its core (this host is shared).
Default: 4 s after 1 s of warm-up, 3 passes, about 8 minutes on a quiet host. Writes
bench/results/sync_servers.md, .json and .png (``--out``; the plot needs matplotlib).

Run it from a virtualenv of its own with flask-asgi, gunicorn, gevent and granian
installed (``python3 -m venv .venv-bench && .venv-bench/bin/pip install -e ".[test]"
gunicorn gevent matplotlib``) and wrk. Not the project's ``.venv``: with gevent installed
there, ``SocketIO(app)`` picks its gevent mode and the Flask-SocketIO tests fail.

``--only async-sleep-1000`` (not in the default run; needs ``quart`` in the venv too): the
async side of issue 20's last target. The async benchmark app's ``/sleep``, an ``async def``
view that awaits ``asyncio.sleep(0.05)``, at c=1000 on flask-asgi (``flask serve --server
uvicorn`` / ``--server granian``, apps/flask_asgi_app.py) and on Quart (apps/quart_app.py,
with bench/servers.py's uvicorn, granian and hypercorn commands), beside gunicorn gevent
serving the sync app's ``time.sleep(0.05)`` view, monkey-patched (what a gevent user runs);
the table of the target is written to bench/results/async_c1000.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import servers
from run import cpu_busy, cpu_ticks, process_tree
from servers import (
    APPS,
    BENCH,
    BIN,
    HOST,
    SERVER_CPU,
    Workload,
    peak_rss_kib,
    stop,
    wait_ready,
    wrk,
)

APP = "flask_sync_app:app"

WORKLOADS = [
    Workload("hello", "/hello", 64),
    Workload("echo", "/echo", 64, "echo.lua"),
    Workload("sleep-1000", "/sleep", 1000),
]
#: The ceiling serves only the views that need no waiting.
CEILING_WORKLOADS = {"hello", "echo"}
#: Run only when named in --only: async views at c=1000 (issue 20's last target).
ASYNC_WORKLOADS = [Workload("async-sleep-1000", "/sleep", 1000)]


def _gunicorn(worker: str, port: int, *extra: str) -> list[str]:
    return [
        str(BIN / "gunicorn"), APP, "--chdir", str(APPS), "-k", worker, "-w", "1",
        "--bind", f"{HOST}:{port}", "--backlog", "2048", "--log-level", "warning", *extra,
    ]  # fmt: skip


def _flask_serve(server: str, port: int, *extra: str, app: str = "flask_sync_app") -> list[str]:
    return [
        str(BIN / "flask"), "--app", app, "serve", "--server", server,
        "--host", HOST, "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip


def _granian_wsgi(port: int) -> list[str]:
    return [
        str(BIN / "granian"), "--interface", "wsgi", "--working-dir", str(APPS),
        "--host", HOST, "--port", str(port), "--log-level", "warning", APP,
    ]  # fmt: skip


def _inline_ceiling(port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"), "inline_flask_app:asgi", "--app-dir", str(APPS),
        "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--lifespan", "on", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


#: name -> port -> command. The peers first, then flask-asgi, then the ceiling.
CANDIDATES: dict[str, Any] = {
    "gunicorn gthread": lambda port: _gunicorn("gthread", port, "--threads", "32"),
    # worker-connections: gevent's default of 1000 is under 1,000 clients + the probe.
    "gunicorn gevent": lambda port: _gunicorn("gevent", port, "--worker-connections", "4000"),
    "granian WSGI": _granian_wsgi,
    "flask-asgi (uvicorn)": lambda port: _flask_serve("uvicorn", port),
    "flask-asgi (granian)": lambda port: _flask_serve("granian", port),
    "flask-asgi (granian wsgi)": lambda port: _flask_serve("granian", port, "--interface", "wsgi"),
    "inline ceiling": _inline_ceiling,
    # The async benchmark apps (async-sleep-1000 only); Quart as bench/servers.py runs it.
    "flask-asgi async (uvicorn)": lambda port: _flask_serve("uvicorn", port, app="flask_asgi_app"),
    "flask-asgi async (granian)": lambda port: _flask_serve("granian", port, app="flask_asgi_app"),
    "Quart (uvicorn)": lambda port: servers._uvicorn("quart_app:app", port),
    "Quart (granian)": lambda port: servers._granian("quart_app:app", port),
    "Quart (hypercorn)": lambda port: servers._hypercorn("quart_app:app", port),
}
FLASK_ASGI = [
    "flask-asgi (uvicorn)",
    "flask-asgi (granian)",
    "flask-asgi (granian wsgi)",
]
PEERS = ["gunicorn gthread", "gunicorn gevent", "granian WSGI"]
ASYNC_FLASK_ASGI = ["flask-asgi async (uvicorn)", "flask-asgi async (granian)"]
QUART = ["Quart (uvicorn)", "Quart (granian)", "Quart (hypercorn)"]
#: The targets of issue 20 for async views at c=1000 (one server suffices).
ASYNC_TARGETS = {"Quart": 1.6, "gunicorn gevent": 1.5, "p99_ms": 300.0}


def serves(name: str, workload: Workload) -> bool:
    """The async workload: flask-asgi's and Quart's async apps, and gevent's sync app."""
    if workload in ASYNC_WORKLOADS:
        return name in ASYNC_FLASK_ASGI or name in QUART or name == "gunicorn gevent"
    if name in ASYNC_FLASK_ASGI or name in QUART:
        return False
    return name != "inline ceiling" or workload.key in CEILING_WORKLOADS


#: A measurement is taken again (up to --retries times) when other processes used more
#: than this share of the server's core during it (this host is shared).
DISTURBED_PERCENT = 15.0


def server_ticks(root: int) -> int:
    return sum(cpu_ticks(pid) or 0 for pid in process_tree(root))


def wait_quiet(deadline: float, busy_percent: float = 20.0, most: float = 20.0) -> None:
    """Wait (at most ``most`` seconds, never past ``deadline``) until the server's core is
    under ``busy_percent`` busy over half a second: other people's jobs come and go."""
    until = min(deadline, time.monotonic() + most)
    while time.monotonic() < until:
        before = cpu_busy()[SERVER_CPU]
        time.sleep(0.5)
        after = cpu_busy()[SERVER_CPU]
        if 100 * (after[0] - before[0]) / max(1, after[1] - before[1]) < busy_percent:
            return


def measure(name: str, workload: Workload, args: argparse.Namespace, port: int) -> dict[str, Any]:
    """One cell, measured again while others used the server's core (the least disturbed
    attempt is kept). Until the run's --budget is spent, each attempt first waits a little
    for the server's core to be quiet."""
    kept: dict[str, Any] | None = None
    for _ in range(1 + args.retries):
        wait_quiet(args.deadline)
        cell = measure_once(name, workload, args, port)
        port += 1000
        if kept is None or cell["foreign_percent"] < kept["foreign_percent"]:
            kept = cell
        if cell["foreign_percent"] <= DISTURBED_PERCENT or time.monotonic() > args.deadline:
            break
        print(f"  [{name} {workload.key}: {cell['foreign_percent']:.0f} % of the server core"
              " used by others; measuring again]", flush=True)  # fmt: skip
    assert kept is not None
    return kept


def measure_once(
    name: str, workload: Workload, args: argparse.Namespace, port: int
) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1", **dict(args.env))
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *CANDIDATES[name](port)],
        cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(port, proc)
        if args.warmup:
            wrk(port, workload, args.warmup)
        ticks, core = server_ticks(proc.pid), cpu_busy()[SERVER_CPU]
        summary = wrk(port, workload, args.duration)
        ticks, after = server_ticks(proc.pid) - ticks, cpu_busy()[SERVER_CPU]
        rss = peak_rss_kib(proc.pid)
    finally:
        stop(proc)
    errors = summary["errors"]
    total = max(1, after[1] - core[1])  # jiffies of the core, busy or not
    return {
        "server_cpu_percent": 100 * ticks / total,
        "foreign_percent": max(0.0, 100 * (after[0] - core[0] - ticks) / total),
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "p50_ms": summary["latency_us"]["p50"] / 1000,
        "p99_ms": summary["latency_us"]["p99"] / 1000,
        "non_2xx": errors["status"],
        "socket_errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "peak_rss_mib": rss / 1024,
    }


def run(args: argparse.Namespace, names: list[str], loads: list[Workload]) -> dict[str, Any]:
    """{name: {workload: the median pass's cell, with every pass's errors summed and its
    req/s listed in pass order}}"""
    results: dict[str, dict[str, Any]] = {}
    port = 9500
    for pass_no in range(args.passes):
        for workload in loads:
            cands = [n for n in names if serves(n, workload)]
            shift = pass_no % len(cands)
            for name in cands[shift:] + cands[:shift]:
                port += 1
                cell = measure(name, workload, args, port)
                kept = results.setdefault(name, {}).get(workload.key)
                if kept is None:
                    kept = results[name][workload.key] = dict(cell, passes=[], all_non_2xx=0,
                                                              all_socket_errors=0)  # fmt: skip
                kept.setdefault("cells", []).append(cell)
                kept.update(median_cell(kept["cells"]))
                kept["passes"].append(round(cell["rps"]))
                kept.setdefault("per_cpu_s", []).append(round(per_cpu_second(cell)))
                kept.setdefault("foreign_by_pass", []).append(round(cell["foreign_percent"]))
                kept["all_non_2xx"] += cell["non_2xx"]
                kept["all_socket_errors"] += cell["socket_errors"]
                print(f"{workload.key:<11} {name:<26} {cell['rps']:>8,.0f} req/s"
                      f"  p99 {cell['p99_ms']:>8,.1f} ms  non-2xx {cell['non_2xx']}"
                      f"  socket errors {cell['socket_errors']}"
                      f"  cpu {cell['server_cpu_percent']:.0f} %"
                      f"  others {cell['foreign_percent']:.0f} %", flush=True)  # fmt: skip
    return results


def median_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass whose req/s is the median (the lower middle one of an even count)."""
    ordered = sorted(cells, key=lambda c: c["rps"])
    return ordered[(len(ordered) - 1) // 2]


def pass_ratios(own: dict[str, Any], theirs: dict[str, Any]) -> str:
    """req/s ratio of each pass (own's over theirs, the same pass), in pass order."""
    pairs = zip(own["passes"], theirs["passes"], strict=False)
    return "/".join(f"{a / b:.2f}" for a, b in pairs if b)


def per_cpu_second(cell: dict[str, Any]) -> float:
    """Requests per second of the server's own CPU time: what a request costs, which other
    processes on a shared core disturb far less than req/s (for a server that is
    CPU-bound; under 100 % CPU it is the efficiency, not the capacity)."""
    return float(cell["rps"] / max(cell["server_cpu_percent"], 1.0) * 100)


def cpu_rate(cell: dict[str, Any]) -> float:
    """The median over the passes of requests per server CPU-second."""
    return float(statistics.median(cell.get("per_cpu_s") or [per_cpu_second(cell)]))


def cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "–"
    text = (
        f"{cell['rps']:,.0f}; p99 {cell['p99_ms']:,.0f} ms; {cell['all_non_2xx']} non-2xx;"
        f" {cpu_rate(cell):,.0f}/CPU-s"
    )
    if cell["all_socket_errors"]:
        text += f", {cell['all_socket_errors']} socket errors"
    if cell["foreign_percent"] > DISTURBED_PERCENT:
        text += f" (others used {cell['foreign_percent']:.0f} % of the core)"
    return text


def tables(results: dict[str, Any], names: list[str], loads: list[Workload]) -> str:
    label = {w.key: f"{w.key} (c={w.connections})" for w in loads}
    lines = ["| workload | " + " | ".join(names) + " |", "|---|" + "--:|" * len(names)]
    for w in loads:
        cells = [cell_text(results.get(n, {}).get(w.key)) for n in names]
        lines.append(f"| {label[w.key]} | " + " | ".join(cells) + " |")
    mine = [n for n in FLASK_ASGI + ASYNC_FLASK_ASGI if n in names]
    others = [n for n in names if n not in FLASK_ASGI + ASYNC_FLASK_ASGI]
    if mine and others:
        lines += [
            "",
            "Ratios, flask-asgi's over the peer's (same run): req/s (median pass each), in"
            " brackets requests per server CPU-second (median of the passes), then the req/s"
            " ratio of each pass (pass 1/2/...):",
            "",
        ]
        lines += ["| workload | " + " | ".join(f"{m} ×" for m in mine) + " |"]
        lines += ["|---|" + "---|" * len(mine)]
        for w in loads:
            row = []
            for m in mine:
                own = results.get(m, {}).get(w.key)
                parts = []
                for peer in others:
                    theirs = results.get(peer, {}).get(w.key)
                    if own and theirs:
                        parts.append(
                            f"{peer} {own['rps'] / theirs['rps']:.2f}"
                            f" ({cpu_rate(own) / cpu_rate(theirs):.2f};"
                            f" {pass_ratios(own, theirs)})"
                        )
                row.append(", ".join(parts) or "–")
            lines.append(f"| {label[w.key]} | " + " | ".join(row) + " |")
    if any(w in ASYNC_WORKLOADS for w in loads):
        lines += ["", async_targets(results)]
    return "\n".join(lines)


def async_targets(results: dict[str, Any]) -> str:
    """Issue 20: async views at c=1000 >= 1.6x Quart and >= 1.5x gevent, p99 <= 300 ms, on
    at least one server; against Quart on the same server and against Quart's best."""
    key = ASYNC_WORKLOADS[0].key
    cells = {n: results.get(n, {}).get(key) for n in ASYNC_FLASK_ASGI + QUART}
    gevent = results.get("gunicorn gevent", {}).get(key)
    quarts = [c for n, c in cells.items() if n in QUART and c]
    best_quart = max((c["rps"] for c in quarts), default=0.0)
    lines = [
        f"Target (issue 20), {key}: ≥ {ASYNC_TARGETS['Quart']}× Quart and"
        f" ≥ {ASYNC_TARGETS['gunicorn gevent']}× gunicorn gevent with p99"
        f" ≤ {ASYNC_TARGETS['p99_ms']:.0f} ms, on at least one server:",
        "",
        "| flask-asgi on | × Quart, same server | × Quart's best | × gunicorn gevent | p99 | met |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for name in ASYNC_FLASK_ASGI:
        own = cells.get(name)
        if not own:
            continue
        twin = cells.get(name.replace("flask-asgi async", "Quart"))
        same = own["rps"] / twin["rps"] if twin else 0.0
        best = own["rps"] / best_quart if best_quart else 0.0
        vs_gevent = own["rps"] / gevent["rps"] if gevent else 0.0
        met = (
            same >= ASYNC_TARGETS["Quart"]
            and vs_gevent >= ASYNC_TARGETS["gunicorn gevent"]
            and own["p99_ms"] <= ASYNC_TARGETS["p99_ms"]
            and own["all_non_2xx"] + own["all_socket_errors"] == 0
        )
        server = name.removeprefix("flask-asgi async ").strip("()")
        lines.append(
            f"| {server} | {same:.2f} | {best:.2f} | {vs_gevent:.2f} | {own['p99_ms']:,.0f} ms"
            f" | {'yes' if met else '**no**'} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], names: list[str], loads: list[Workload], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(loads), figsize=(max(6.5, 4.2 * len(loads)), 4.2), squeeze=False
    )
    colours = {n: f"C{i}" for i, n in enumerate(CANDIDATES)}
    for ax, w in zip(axes[0], loads, strict=True):
        shown = [n for n in names if w.key in results.get(n, {})]
        values = [results[n][w.key]["rps"] for n in shown]
        bars = ax.bar(range(len(shown)), values, color=[colours[n] for n in shown])
        for bar, n in zip(bars, shown, strict=True):
            cell = results[n][w.key]
            note = f"p99 {cell['p99_ms']:,.0f} ms"
            if cell["all_non_2xx"] or cell["all_socket_errors"]:
                note += f"\n{cell['all_non_2xx'] + cell['all_socket_errors']} err"
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
        ax.set_xticks(range(len(shown)), shown, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{w.key} (c={w.connections})", fontsize=10)
        ax.set_ylabel("requests/s")
        ax.margins(y=0.15)
    fig.suptitle(f"{title(loads)} (one process, one core)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def title(loads: list[Workload]) -> str:
    if all(w in ASYNC_WORKLOADS for w in loads):
        return "Async views at c=1000: flask-asgi, Quart, gunicorn gevent"
    return "The same sync Flask app per server"


def command_text(name: str) -> str:
    binary, *rest = CANDIDATES[name](0)
    return " ".join([Path(binary).name, *rest]).replace(str(APPS), "bench/apps")


def versions() -> str:
    found = []
    for package in ("flask", "gunicorn", "gevent", "granian", "uvicorn", "quart", "hypercorn"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--retries", type=int, default=2, help="per disturbed cell")
    parser.add_argument(
        "--budget", type=int, default=600, help="seconds after which nothing waits or retries"
    )
    parser.add_argument("--only", default="", help="comma-separated workloads and candidates")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--label", help="the results' name: sync_servers, async_c1000 for async-sleep-1000 alone"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda s: s.split("=", 1),
        help="KEY=VALUE for every server, e.g. FLASK_ASGI_THREADS=512",
    )
    parser.add_argument(
        "--from-json", type=Path, help="write the table and plot of a saved run's .json again"
    )
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    names = [n for n in CANDIDATES if not only & set(CANDIDATES) or n in only]
    loads = [w for w in WORKLOADS if not only & {w.key for w in WORKLOADS} or w.key in only]
    if only & {w.key for w in ASYNC_WORKLOADS}:
        loads = [w for w in WORKLOADS + ASYNC_WORKLOADS if w.key in only]
    names = [n for n in names if any(serves(n, w) for w in loads)]
    if args.label is None:
        args.label = "async_c1000" if all(w in ASYNC_WORKLOADS for w in loads) else "sync_servers"
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        header = saved.pop("_header", f"Re-rendered from {args.from_json.name}.")
        results = saved
        names = [n for n in names if n in results]
    else:
        started = time.monotonic()
        args.deadline = started + args.budget
        results = run(args, names, loads)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
        ).stdout.strip()
        header = (
            f"{when}, code {commit or '?'}, {platform.processor() or 'cpu'}, Python"
            f" {platform.python_version()}, {os.cpu_count()} cores; {versions()}. Each server"
            f" is one process on CPU 0, wrk (-t1, --timeout 10s) on CPU 1; {args.duration} s"
            f" after {args.warmup} s of warm-up, the median of {args.passes} interleaved passes"
            " (non-2xx and socket errors: all passes); a cell is measured again (up to"
            f" {args.retries} times) while other processes use over {DISTURBED_PERCENT:.0f} %"
            f" of the server's core (after a wait of up to 20 s for a quiet core;"
            f" {args.budget} s budget); {time.monotonic() - started:.0f} s in all."
            + (
                " Environment: " + ", ".join(f"{k}={v}" for k, v in args.env) + "."
                if args.env
                else ""
            )
        )
    text = (
        f"# {title(loads)} ({args.label})\n\n{header} Sync app:"
        " bench/apps/flask_sync_app.py, unchanged on every server. inline ceiling is a"
        " ceiling, not a runtime (bench/apps/inline_flask_app.py). /CPU-s: requests per"
        " second of the server's own CPU time, the median of the passes."
        + (
            " async-sleep-1000: the async apps' `async def` view awaiting"
            " `asyncio.sleep(0.05)` (bench/apps/flask_asgi_app.py on flask-asgi,"
            " bench/apps/quart_app.py on Quart), beside gunicorn gevent serving the sync"
            " app's `time.sleep(0.05)` (monkey-patched by gunicorn's worker)."
            if any(w in ASYNC_WORKLOADS for w in loads)
            else ""
        )
        + "\n\n"
        + tables(results, names, loads)
        + "\n\nCommands (port elided): "
        + "; ".join(f"{n}: `{command_text(n)}`" for n in names)
        + ".\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.label}.md").write_text(text)
    for cells in results.values():
        for cell in cells.values():
            cell.pop("cells", None)
    saving = dict(results, _header=header)
    (args.out / f"{args.label}.json").write_text(json.dumps(saving, indent=2) + "\n")
    if not args.no_plot:
        plot(results, names, loads, args.out / f"{args.label}.png")
    print(text)


if __name__ == "__main__":
    main()
