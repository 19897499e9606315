"""The storage layer against SQLite (aiosqlite) and a real PostgreSQL server (asyncpg)."""

from __future__ import annotations

from typing import Any

import pytest
from monitor_support import api_login, run, state

from examples.monitor import create_app
from examples.monitor.store import CheckResult, Store, async_database_url


def test_async_database_url() -> None:
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert async_database_url("postgresql://u:p@h:5/db") == "postgresql+asyncpg://u:p@h:5/db"
    assert async_database_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert async_database_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"


def result(ok: bool, latency: float | None = 12.5, at: float = 1e9) -> CheckResult:
    return CheckResult(ok, 200 if ok else 503, latency, None if ok else "HTTP 503", at)


async def test_users_monitors_and_checks(db_url: str) -> None:
    store = Store(db_url)
    try:
        await store.create_schema()
        await store.create_schema()  # idempotent: every start runs it
        ada = await store.create_user("Ada@Example.com", "hash")
        bob = await store.create_user("bob@example.com", "hash")
        assert await store.count_users() == 2
        assert (await store.get_user_by_email("ada@example.com")).id == ada.id
        assert (await store.get_user(ada.id)).email == "ada@example.com"
        assert await store.get_user(9999) is None

        first = await store.create_monitor(ada.id, "one", "http://a/", 5, 1.0)
        second = await store.create_monitor(ada.id, "two", "http://b/", 10, 2.5)
        theirs = await store.create_monitor(bob.id, "three", "http://c/", 5, 1.0)
        assert [m.id for m in await store.list_monitors(ada.id)] == [first.id, second.id]
        assert len(await store.list_monitors()) == 3
        assert await store.get_monitor(ada.id, theirs.id) is None
        assert (await store.get_monitor(bob.id, theirs.id)).name == "three"

        for i in range(12):
            recorded = await store.record_check(first.id, result(i % 4 != 0, at=1e9 + i))
            assert recorded is not None
        monitor, check = recorded
        assert monitor.status == "up" and check.latency_ms == 12.5
        await store.record_check(second.id, result(False, latency=None))
        assert (await store.get_monitor(ada.id, second.id)).status == "down"

        page = await store.list_checks(first.id, page=2, per_page=5)
        assert (page.total, page.pages, len(page.items)) == (12, 3, 5)
        assert [c.checked_at for c in page.items] == [1e9 + i for i in range(6, 1, -1)]

        recent = await store.recent_checks([first.id, second.id], limit=4)
        assert [c.checked_at for c in recent[first.id]] == [1e9 + i for i in range(8, 12)]
        assert len(recent[second.id]) == 1

        await store.prune_checks(keep=3)
        assert (await store.list_checks(first.id, 1, 50)).total == 3
        assert (await store.list_checks(second.id, 1, 50)).total == 1

        assert not await store.delete_monitor(bob.id, first.id)  # not theirs
        assert await store.delete_monitor(ada.id, first.id)
        assert (await store.list_checks(first.id, 1, 50)).total == 0
        assert await store.record_check(first.id, result(True)) is None  # deleted meanwhile
    finally:
        await store.dispose()


def test_api_round_trip(db_url: str) -> None:
    """The whole app on this database: engine opened by the lifespan, user_loader, API."""
    from werkzeug.security import generate_password_hash

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "x",
            "DATABASE_URL": db_url,
            "MONITOR_SCHEDULER": False,
            "MONITOR_SEED": False,
        }
    )
    with state(app).asgi.serving():
        store = state(app).require_store()
        run(store.create_user("ada@example.com", generate_password_hash("pw")))
        client = app.test_client()
        api_login(client, "ada@example.com", "pw")
        created = client.post(
            "/api/monitors", json={"name": "x", "url": "http://127.0.0.1:9/", "interval": 5}
        )
        assert created.status_code == 201
        run(store.record_check(created.json["id"], result(True)))
        checks = client.get(f"/api/monitors/{created.json['id']}/checks").json
        assert checks["total"] == 1 and checks["checks"][0]["status_code"] == 200
        assert client.get("/").status_code == 200
    assert state(app).store is None  # disposed at shutdown


@pytest.mark.parametrize("seed", [True, False])
def test_first_run_seeds_a_demo_user(make_app: Any, seed: bool) -> None:
    app = make_app(MONITOR_SEED=seed)
    with state(app).asgi.serving():
        store = state(app).require_store()
        user = run(store.get_user_by_email("demo@example.com"))
        assert (user is not None) is seed
        if seed:
            client = app.test_client()
            api_login(client, "demo@example.com", "demo")
            monitors = client.get("/api/monitors").json["monitors"]  # seeded at startup
            assert [m["name"] for m in monitors] == [
                "Demo: always up",
                "Demo: slow",
                "Demo: flaky",
                "Demo: down",
            ]


def test_demo_monitors_seeded_with_a_fixed_address_become_paths(make_app: Any) -> None:
    """A database seeded by an older version (the first run's host:port in the URL): at
    startup the demo monitors become paths on this server; other monitors are left alone."""
    app = make_app(MONITOR_SEED=False)
    with state(app).asgi.serving():
        store = state(app).require_store()
        user = run(store.create_user("demo@example.com", "x"))
        for name, url in (
            ("Demo: always up", "http://127.0.0.1:8000/demo/up"),
            ("Demo: flaky", "http://127.0.0.1:8000/demo/flaky"),
            ("Demo: down", "http://127.0.0.1:1/"),
            ("mine", "http://127.0.0.1:8000/demo/up"),
        ):
            run(store.create_monitor(user.id, name, url, 5, 1.0))
    app = make_app(MONITOR_SEED=True)  # the same database, started again
    with state(app).asgi.serving():
        store = state(app).require_store()
        urls = {m.name: m.url for m in run(store.list_monitors())}
    assert urls == {
        "Demo: always up": "/demo/up",
        "Demo: flaky": "/demo/flaky",
        "Demo: down": "http://127.0.0.1:1/",
        "mine": "http://127.0.0.1:8000/demo/up",
    }
