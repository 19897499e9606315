"""The monitor on a real uvicorn server, checking a real upstream on loopback."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from helpers import free_port, run_live
from monitor_support import Upstream, env, prepare_user, state, wait_for

from examples.monitor.checker import make_http_client, probe


async def test_probe_reports_every_failure_as_a_result(upstream: Upstream) -> None:
    http = make_http_client(10)
    try:
        ok = await probe(http, upstream.url + "/health", 5)
        assert ok.ok and ok.status_code == 200 and ok.latency_ms is not None and not ok.error

        upstream.status = 500
        server_error = await probe(http, upstream.url, 5)
        assert not server_error.ok and server_error.status_code == 500
        assert server_error.error == "HTTP 500"

        upstream.status, upstream.delay = 200, 3.0
        slow = await probe(http, upstream.url, 0.2)
        assert not slow.ok and slow.error == "timeout after 0.2 s" and slow.status_code is None
        upstream.delay = 0

        refused = await probe(http, f"http://127.0.0.1:{free_port()}/", 5)
        assert not refused.ok and refused.error == "connection refused"

        tls = await probe(http, upstream.url.replace("http:", "https:"), 5)  # plain HTTP port
        assert not tls.ok and tls.error.startswith("TLS error"), tls.error

        dns = await probe(http, "http://no-such-host.invalid/", 5)
        assert not dns.ok
        assert dns.error.startswith(("DNS error", "timeout")), dns.error
    finally:
        await http.close()


def _login(client: httpx.Client) -> None:
    response = client.post(
        "/api/login", json={"email": "ada@example.com", "password": "correct horse"}
    )
    assert response.status_code == 200, response.text


def test_scheduler_records_ups_and_downs_live(
    make_app: Any, sqlite_url: str, upstream: Upstream
) -> None:
    prepare_user(sqlite_url)
    app = make_app(MONITOR_SCHEDULER=True)
    events: list[dict[str, Any]] = []
    stop_reading = threading.Event()

    with run_live(state(app).asgi) as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            _login(client)

            def read_events() -> None:
                with httpx.Client(base_url=base_url, cookies=client.cookies, timeout=30) as c:
                    with c.stream("GET", "/events") as stream:
                        kind = None
                        for line in stream.iter_lines():
                            if line.startswith("event: "):
                                kind = line[7:]
                            elif line.startswith("data: ") and kind == "check":
                                events.append(json.loads(line[6:]))
                            if stop_reading.is_set():
                                return

            reader = threading.Thread(target=read_events, daemon=True)
            reader.start()

            created = client.post(
                "/api/monitors",
                json={"name": "up", "url": upstream.url + "/health", "interval": 1, "timeout": 0.5},
            )
            assert created.status_code == 201
            monitor_id = created.json()["id"]
            checks_url = f"/api/monitors/{monitor_id}/checks"

            def checks() -> list[dict[str, Any]]:
                return client.get(checks_url, params={"per_page": 500}).json()["checks"]

            wait_for(lambda: sum(c["ok"] for c in checks()) >= 2)
            assert client.get(f"/api/monitors/{monitor_id}").json()["status"] == "up"

            upstream.status = 503
            wait_for(lambda: any(c["error"] == "HTTP 503" for c in checks()))
            wait_for(lambda: client.get(f"/api/monitors/{monitor_id}").json()["status"] == "down")

            upstream.status, upstream.delay = 200, 2.0
            wait_for(lambda: any(c["error"] == "timeout after 0.5 s" for c in checks()))

            upstream.delay = 0.0
            wait_for(lambda: client.get(f"/api/monitors/{monitor_id}").json()["status"] == "up")

            # The live stream carried the same story.
            wait_for(lambda: {e["check"]["ok"] for e in events} == {True, False})
            assert all(e["monitor"]["id"] == monitor_id for e in events)
            stop_reading.set()

            # Deleting stops the checks.
            assert client.delete(f"/api/monitors/{monitor_id}").status_code == 204
            scheduler = state(app).scheduler
            wait_for(lambda: monitor_id not in scheduler.monitors)
    assert state(app).scheduler is None and state(app).store is None  # stopped at shutdown


def test_flask_serve_first_run_watches_its_demo_endpoints(cli_server: Any, tmp_path: Any) -> None:
    """The README command on an empty database: demo user, demo monitors, live results.
    Started again on another port, the demo monitors follow the server."""
    database = tmp_path / "first-run.db"
    with env(DATABASE_URL=f"sqlite:///{database}", SECRET_KEY="first-run"):
        server = cli_server("examples/monitor")

    def demo_monitors(server: Any) -> dict[str, dict[str, Any]]:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            client.get("/login")
            login = {"email": "demo@example.com", "password": "demo"}
            assert client.post("/api/login", json=login).status_code == 200
            monitors: dict[str, dict[str, Any]] = {}

            def all_checked() -> bool:
                monitors.clear()
                for m in client.get("/api/monitors").json()["monitors"]:
                    monitors[m["name"]] = m
                return len(monitors) == 4 and all(
                    m["status"] != "pending" for m in monitors.values()
                )

            wait_for(all_checked, timeout=30)
            return monitors

    first = demo_monitors(server)
    assert first["Demo: always up"]["status"] == "up"
    assert first["Demo: down"]["last_error"] == "connection refused"
    assert first["Demo: always up"]["url"] == "/demo/up"  # a path on this server, not host:port
    output = server.output()
    assert "sign in as demo@example.com" in output
    assert f"checked on http://127.0.0.1:{server.port}" in output
    assert database.exists()
    assert "Application shutdown complete" in output

    # The same database, served on another port: the demo monitors are checked there.
    with env(DATABASE_URL=f"sqlite:///{database}", SECRET_KEY="first-run"):
        again = cli_server("examples/monitor")
    assert again.port != server.port
    restarted = again_checked_at = 0.0

    def checked_again() -> bool:
        nonlocal restarted, again_checked_at
        monitors = demo_monitors(again)
        up = monitors["Demo: always up"]
        again_checked_at = up["last_checked_at"]
        restarted = restarted or again_checked_at
        return (
            again_checked_at > first["Demo: always up"]["last_checked_at"] and up["status"] == "up"
        )

    assert wait_for(checked_again, timeout=30), demo_monitors(again)
    assert len(demo_monitors(again)) == 4  # not seeded twice
    assert f"checked on http://127.0.0.1:{again.port}" in again.output()
