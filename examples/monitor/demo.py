"""Demo endpoints served by the app itself, and the first-run seed that watches them.

On first run (an empty database, ``MONITOR_SEED`` on) a demo user is created at startup
and, on the first request, four monitors pointing at this very server: up, slow, flaky and
down (a closed port). The monitors are created on the first request because only then is
the server's real port known (it is in the ASGI scope); the startup log prints the sign-in.
"""

from __future__ import annotations

import asyncio
import logging
import random

from flask import Blueprint, Flask, current_app, request
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


async def seed_user(app: Flask) -> None:
    """Startup: create the demo user in an empty database."""
    from . import DEMO_EMAIL, DEMO_PASSWORD, state

    shared = state(app)
    db = shared.require_store()
    if await db.count_users() == 0:
        password_hash = await flask_asgi.run_sync(generate_password_hash, DEMO_PASSWORD)
        await db.create_user(DEMO_EMAIL, password_hash)
        shared.demo_pending = True
        logger.info("monitor: first run, created the demo user")
    if await db.get_user_by_email(DEMO_EMAIL) is not None:
        logger.info(
            "monitor: open the address uvicorn prints below and sign in as %s, password %r",
            DEMO_EMAIL,
            DEMO_PASSWORD,
        )


@bp.before_app_request
async def seed_demo_monitors() -> None:
    from . import DEMO_EMAIL, notify_scheduler, state

    shared = state()
    if not shared.demo_pending:
        return
    shared.demo_pending = False  # on the loop, before any await: only one request seeds
    host = request.environ.get("SERVER_NAME") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{request.environ.get('SERVER_PORT', '80')}/demo"
    db = shared.require_store()
    user = await db.get_user_by_email(DEMO_EMAIL)
    if user is None:
        return
    for name, url, interval, timeout in (
        ("Demo: always up", f"{base}/up", 3, 2.0),
        ("Demo: slow", f"{base}/slow", 5, 1.5),
        ("Demo: flaky", f"{base}/flaky", 3, 2.0),
        ("Demo: down", DOWN_URL, 10, 2.0),
    ):
        await db.create_monitor(user.id, name, url, interval, timeout)
    notify_scheduler()
    current_app.logger.info("monitor: demo monitors watch %s", base)
