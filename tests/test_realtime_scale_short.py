"""CI's short run of stress/socketio_clients.py (the full run, 1,000 clients on each server,
is in docs/socketio.md): the unchanged Flask-SocketIO chat and Flask-Sock echo examples on
``flask serve`` with 150 real clients at once, every message delivered, the sync view
answering, the threads per connection as documented."""

from __future__ import annotations

from typing import Any

from helpers import run_stress_script


def run_clients(*args: str) -> dict[str, Any]:
    report = run_stress_script("socketio_clients.py", *args)
    # Within a generous bound (a loaded 2-core machine); the script's own is 1 s.
    assert report["checks"]["all connected"] and report["checks"]["all delivered"], report
    return report


def test_150_socketio_clients_on_websockets() -> None:
    """150 python-socketio clients connect at once, each emits to its room of 10 and 5
    send a broadcast: 2,250 deliveries, none missing; 4 threads per connection."""
    report = run_clients(
        "socketio", "--clients", "150", "--broadcasters", "5", "--limit", "5",
        "--leave-seconds", "1", "--procs", "1",
    )  # fmt: skip
    assert report["connected"] == 150 and report["deliveries"] == 150 * (10 + 5)
    assert report["missing"] == 0 and report["disconnected"] == 0
    assert report["probes"] > 5 and not report["probe_failures"]
    assert 3.5 <= report["threads_per_client"] <= 4.5


def test_150_flask_sock_clients_echo() -> None:
    """150 websockets clients connect to Flask-Sock's /echo at once, on the default 40
    worker threads: all connect (each worker lent to its connection is replaced at once)
    and echo 10 messages each."""
    report = run_clients(
        "sock", "--clients", "150", "--messages", "10", "--limit", "5",
        "--leave-seconds", "1", "--procs", "1",
    )  # fmt: skip
    assert report["connected"] == 150 and report["deliveries"] == 1500
    assert report["probes"] > 5 and not report["probe_failures"]
