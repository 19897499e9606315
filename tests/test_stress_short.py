"""CI's SHORT versions of the stress/ commands (docs/reliability.md has the full runs'
figures): the disconnect storm, the socket fuzzer, the hypothesis ASGI fuzzer, the soak.

Each runs the real script (a real `flask serve` on loopback, except the in-process ASGI
fuzzer) at a small scale, in well under 30 s on a loaded 2-core machine, and asserts the
script's own checks plus that it really did the work it reports (so a script that
silently skipped its load would fail here).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import run_stress_script


def run_stress(script: str, *args: str) -> dict[str, Any]:
    report = run_stress_script(script, *args)
    assert report["ok"], json.dumps(report, indent=1)[-4000:]
    return report


def test_disconnect_storm_short() -> None:
    """700 clients leave at every stage (headers, body, waiting view, mid-stream; half with
    a reset): fds, threads, greenlets and RSS flat; every teardown ran; every stream that
    started was closed."""
    report = run_stress("disconnects.py", "--per-stage", "100", "--warmup", "30", "--chunks", "2")
    assert report["clients"] == 700
    seen = report["seen_by_the_app"]
    assert seen["teardowns with CancelledError"] >= 100  # async views cancelled on leaving
    assert seen["async streams started"] >= 100 and seen["sync streams started"] >= 50
    assert all(report["checks"].values())


def test_socket_fuzzer_short() -> None:
    """1,000 mutated raw HTTP/1.1 requests: every response parses, the server stays up."""
    report = run_stress("fuzz_sockets.py", "--requests", "1000", "--seed", "3")
    outcomes = report["outcomes"]
    answered = sum(n for what, n in outcomes.items() if what.isdigit())
    assert answered > 500
    assert outcomes.get("200", 0) > 20 and outcomes.get("400", 0) > 100  # both kinds reached


def test_asgi_fuzzer_short() -> None:
    """300 hypothesis-built scopes and message streams through the ASGI callable: no
    exception escapes, every request that kept its client got a whole response."""
    pytest.importorskip("hypothesis")
    report = run_stress("fuzz_asgi.py", "--examples", "300")
    assert report["examples"] == 300
    statuses = report["statuses"]
    assert statuses.get("200", 0) > 10 and len(statuses) >= 4


def test_soak_short() -> None:
    """12 s of mixed load with 30 clients: resources back to the baseline, every answer
    the expected one."""
    report = run_stress("soak.py", "--seconds", "12", "--interval", "2", "--clients", "30")
    assert report["answers"] > 300
    assert report["under_load"] and max(s["in_flight"] for s in report["under_load"]) > 5
