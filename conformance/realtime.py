"""Run Flask-SocketIO's and Flask-Sock's own tests, plain and with flask-asgi serving the apps.

Usage: ``python conformance/realtime.py`` (tests/test_realtime_suites.py calls it).
Downloads the sdist of the installed Flask-SocketIO and Flask-Sock (both ship their tests)
into ``.cache/conformance``, runs each suite once as upstream runs it, then again with the
``flask_asgi_realtime`` plugin, which serves the apps with flask-asgi on a real server in
the test process and sends upstream's test-client calls over a real python-socketio client
(see that module for how), once per server and transport of ``MATRIX`` (about 20 s in
all). Prints a summary and writes it as JSON. If the sdists are not cached and cannot be
downloaded (offline), exits with status 3 and says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "conformance"
OFFLINE = 3

#: distribution -> the tests its sdist holds, relative to the sdist's folder.
SUITES = {"flask-socketio": "test_socketio.py", "flask-sock": "tests"}
#: The served runs: (server, Socket.IO transport). Flask-Sock's suite has no Socket.IO
#: client, so it runs once per server.
MATRIX = [
    ("uvicorn", "websocket"),
    ("uvicorn", "polling"),
    ("hypercorn", "websocket"),
    ("granian", "websocket"),
]
NETWORK = re.compile(r"flask-asgi on \S+: (\d+) Socket.IO connections, (\d+) Flask-Sock routes")


class Offline(Exception):
    """The sdist is not in the cache and could not be downloaded."""


def sdist_folder(dist: str) -> Path:
    """The unpacked sdist of the installed version of ``dist``, downloaded once."""
    dist_version = version(dist)
    stem = f"{dist.replace('-', '_')}-{dist_version}"
    for name in (stem, f"{dist}-{dist_version}"):
        if (CACHE / name / "PKG-INFO").exists():
            return CACHE / name
    CACHE.mkdir(parents=True, exist_ok=True)
    archives = [CACHE / f"{stem}.tar.gz", CACHE / f"{dist}-{dist_version}.tar.gz"]
    if not any(archive.exists() for archive in archives):
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--retries=1"]
            + ["--timeout=15", "--no-binary", ":all:", f"{dist}=={dist_version}", "-d", str(CACHE)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise Offline(f"pip download {dist}=={dist_version} failed: {done.stderr.strip()}")
    archive = next(archive for archive in archives if archive.exists())
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(CACHE, filter="data")
    return CACHE / top


def run_suite(
    folder: Path, tests: str, server: str | None = None, transport: str = "websocket"
) -> tuple[dict[str, str], str]:
    """Run one suite (served by flask-asgi if ``server``); each test's outcome, the tail."""
    kind = f"{server}-{transport}" if server else "plain"
    report = CACHE / f"{folder.name}-{kind}.xml"
    command = [sys.executable, "-m", "pytest", tests, "-q", "-rs", "-p", "no:cacheprovider"]
    # The sdist's own folder is the root: no config of the project around .cache/ applies.
    command += ["-p", "no:asyncio", f"--rootdir={folder}", "-c", str(folder / "pyproject.toml")]
    command += [f"--junitxml={report}"]
    env = dict(os.environ)
    if server:
        command += ["-p", "flask_asgi_realtime"]
        env["FLASK_ASGI_REALTIME_SERVER"] = server
        env["FLASK_ASGI_REALTIME_TRANSPORT"] = transport
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "conformance"), env.get("PYTHONPATH")])
        )
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        # "tests.test_x.Case" -> "tests/test_x.py::Case", the node id pytest prints.
        *module, last = str(case.get("classname")).split(".")
        path = "/".join(module if last[:1].isupper() else [*module, last]) + ".py"
        cls = f"::{last}" if last[:1].isupper() else ""
        name = f"{path}{cls}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = "passed"
        if kinds & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        outcomes[name] = outcome
    lines = done.stdout.strip().splitlines()
    if not outcomes:
        raise RuntimeError(f"{folder.name} ({kind}) ran no test:\n{done.stdout}{done.stderr}")
    return outcomes, "\n".join(
        line for line in lines if line.startswith("flask-asgi") or "passed" in line
    )


def summary_path() -> Path:
    """Where the summary goes: one per Flask version, as for Flask's own suite."""
    return CACHE / f"summary-realtime-flask-{version('flask')}.json"


def main() -> int:
    summary: dict[str, object] = {}
    try:
        folders = {dist: sdist_folder(dist) for dist in SUITES}
    except Offline as offline:
        print(f"skipped: {offline}")
        return OFFLINE
    runs: list[dict[str, object]] = []
    for dist, tests in SUITES.items():
        folder = folders[dist]
        plain, plain_tail = run_suite(folder, tests)
        baseline = sorted(name for name, outcome in plain.items() if outcome == "passed")
        print(f"{folder.name} plain: {plain_tail.splitlines()[-1]}")
        for server, transport in MATRIX:
            if dist == "flask-sock" and transport != "websocket":
                continue
            served, tail = run_suite(folder, tests, server, transport)
            network = NETWORK.search(tail)
            runs.append(
                {
                    "suite": folder.name,
                    "server": server,
                    "transport": transport,
                    "passing_plain": len(baseline),
                    "passing_served": sum(served.get(name) == "passed" for name in baseline),
                    "skipped_served": sorted(n for n, o in served.items() if o == "skipped"),
                    "differing": [name for name in baseline if served.get(name) != "passed"],
                    "socketio_connections": int(network.group(1)) if network else 0,
                    "websocket_routes": int(network.group(2)) if network else 0,
                }
            )
            print(f"{folder.name} on {server} ({transport}): {tail}")
    summary["runs"] = runs
    summary["versions"] = {dist: version(dist) for dist in [*SUITES, "flask"]}
    summary_path().write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
