"""Flask-SocketIO's and Flask-Sock's own test suites, with flask-asgi serving the apps on
uvicorn, hypercorn and granian, Socket.IO over WebSockets and long-polling (issue 19; how,
in conformance/flask_asgi_realtime.py; the runner is conformance/realtime.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "conformance"))
from flask_asgi_realtime import EXCLUDED  # noqa: E402
from realtime import MATRIX, OFFLINE, summary_path  # noqa: E402


def test_upstream_realtime_suites_pass_with_flask_asgi_serving() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "conformance" / "realtime.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(done.stdout, done.stderr)
    if done.returncode == OFFLINE:
        pytest.skip(f"the upstream sdists are not cached and cannot be downloaded: {done.stdout}")
    assert done.returncode == 0, done.stderr
    runs = json.loads(summary_path().read_text())["runs"]
    socketio_runs = [run for run in runs if run["suite"].startswith("flask_socketio")]
    sock_runs = [run for run in runs if run["suite"].startswith("flask-sock")]
    assert [(run["server"], run["transport"]) for run in socketio_runs] == MATRIX
    assert {run["server"] for run in sock_runs} == {server for server, _ in MATRIX}
    for run in socketio_runs:
        assert run["passing_plain"] >= 40, run  # upstream's suite ran on plain Flask
        # Every test that passes as upstream runs it passes served, but those excluded,
        # each for its listed reason (skipped, so an exclusion cannot hide a failure).
        assert run["differing"] == run["skipped_served"] == sorted(EXCLUDED), run
        # Proof the clients went over the network to the served app.
        assert run["socketio_connections"] >= 50, run
    for run in sock_runs:
        assert run["passing_plain"] == run["passing_served"] >= 3, run
        assert run["differing"] == [], run
        # Every WebSocket route the tests register was opened on the served app.
        assert run["websocket_routes"] >= 4, run
