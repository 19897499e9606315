"""Demo endpoints served by the app itself, and the first-run seed that watches them.

On first run (an empty database, ``MONITOR_SEED`` on) startup creates a demo user and four
monitors: up, slow and flaky point at this very server, down at a closed port. The three
on this server are stored as paths (``/demo/up``), not as URLs: the scheduler checks them
against the address the server is serving on now (learned from the first request of each
run), so they follow the server to another host or port. Databases seeded by an older
version with a fixed ``http://host:port/demo/...`` are turned into paths at startup.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

from flask import Blueprint, Flask, request
from werkzeug.security import generate_password_hash

import flask_asgi

logger = logging.getLogger("monitor")

bp = Blueprint("demo", __name__, url_prefix="/demo")

DOWN_URL = "http://127.0.0.1:1/"  # nothing listens on port 1: connection refused


@bp.get("/up")
async def up() -> dict[str, str]:
    await asyncio.sleep(random.uniform(0.005, 0.04))
    return {"status": "ok"}


@bp.get("/slow")
async def slow() -> dict[str, float]:
    delay = request.args.get("delay", type=float)
    if delay is None:
        delay = random.uniform(0.3, 1.8)
    await asyncio.sleep(min(max(delay, 0.0), 30.0))
    return {"slept": delay}


@bp.get("/flaky")
async def flaky() -> tuple[dict[str, str], int]:
    await asyncio.sleep(random.uniform(0.02, 0.2))
    if random.random() < 0.35:
        return {"status": "having a bad moment"}, 503
    return {"status": "ok"}, 200


#: The demo monitors: (name, URL or path on this server, interval, timeout).
DEMO_MONITORS = (
    ("Demo: always up", "/demo/up", 3, 2.0),
    ("Demo: slow", "/demo/slow", 5, 1.5),
    ("Demo: flaky", "/demo/flaky", 3, 2.0),
    ("Demo: down", DOWN_URL, 10, 2.0),
)
#: How an older version stored them: with the first run's host and port.
_FIXED_ADDRESS = re.compile(r"^http://[^/]+(?P<path>/demo/(?:up|slow|flaky))$")


async def seed_user(app: Flask) -> None:
    """Startup: create the demo user and monitors in an empty database; make older seeded
    demo monitors follow the server."""
    from . import DEMO_EMAIL, DEMO_PASSWORD, state

    db = state(app).require_store()
    if await db.count_users() == 0:
        password_hash = await flask_asgi.run_sync(generate_password_hash, DEMO_PASSWORD)
        user = await db.create_user(DEMO_EMAIL, password_hash)
        for name, url, interval, timeout in DEMO_MONITORS:
            await db.create_monitor(user.id, name, url, interval, timeout)
        logger.info("monitor: first run, created the demo user and demo monitors")
    demo = await db.get_user_by_email(DEMO_EMAIL)
    if demo is not None:
        for monitor in await db.list_monitors(demo.id):
            fixed = _FIXED_ADDRESS.match(monitor.url)
            if monitor.name.startswith("Demo: ") and fixed is not None:
                await db.set_monitor_url(monitor.id, fixed["path"])
        logger.info(
            "monitor: open the address uvicorn prints below and sign in as %s, password %r",
            DEMO_EMAIL,
            DEMO_PASSWORD,
        )


@bp.before_app_request
def learn_server_address() -> None:
    """The first request of a run tells the scheduler where this server is (the ASGI
    scope's ``server``): paths such as ``/demo/up`` are checked there. Sync and cheap: it
    runs before every request."""
    from . import state

    scheduler = state().scheduler
    if scheduler is None or scheduler.base_url is not None:
        return
    host = request.environ.get("SERVER_NAME") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = request.environ.get("SERVER_PORT", "80")
    base_url = f"http://{host}:{port}{request.script_root}"
    scheduler.set_base_url(base_url)
    logger.info("monitor: paths such as /demo/up are checked on %s", base_url)
