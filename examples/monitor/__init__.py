"""An async service monitor: the flagship example of flask-asgi.

A plain Flask 3.1 app (app factory, blueprints, Jinja templates, Flask-Login, Flask-WTF),
served on uvicorn by flask-asgi::

    pip install -e ".[monitor]"
    flask --app examples/monitor serve --port 8000        # or: uvicorn examples.monitor:asgi

Sign in, add HTTP endpoints with an interval and a timeout, and watch their status and
latency update live (server-sent events fed by ``asgi.broadcast``). What runs where:

* one SQLAlchemy ``AsyncEngine`` and one aiohttp client, created by a ``while_serving``
  hook on the server loop and closed at shutdown, shared by requests and the scheduler;
* the scheduler, a task on the server loop started by the same hook (checker.py);
* async views that ``await`` the database; Flask-Login's sync ``user_loader`` reaches the
  async engine through ``flask_asgi.await_``.

Configuration (``create_app(config)`` or environment variables): ``DATABASE_URL``
(default: SQLite in the instance folder; ``postgresql://...`` uses asyncpg), ``SECRET_KEY``
(default: generated once and kept in the instance folder), ``MONITOR_SEED`` (demo user and
demo monitors on first run, default on), ``MONITOR_SCHEDULER`` (default on),
``MONITOR_CONCURRENCY`` (checks in flight, default 50). See docs/monitor.md.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from flask import Flask, current_app, jsonify, request
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.security import generate_password_hash

import flask_asgi

from .checker import Scheduler, make_http_client
from .store import Store, User

logger = logging.getLogger("monitor")

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo"

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message_category = "info"
csrf = CSRFProtect()


class State:
    """What the app shares between requests: created at startup, on the server loop."""

    def __init__(self, asgi: flask_asgi.ASGI) -> None:
        self.asgi = asgi
        self.store: Store | None = None
        self.scheduler: Scheduler | None = None

    def require_store(self) -> Store:
        if self.store is None:
            raise RuntimeError(
                "the monitor's database is opened at server startup: serve the app with"
                " `flask --app examples/monitor serve` (or wrap test requests in"
                " `asgi.serving()`)"
            )
        return self.store


def state(app: Flask | None = None) -> State:
    return (app or current_app).extensions["monitor"]  # type: ignore[no-any-return]


def store() -> Store:
    return state().require_store()


async def publish(channel: str, message: str) -> None:
    await state().asgi.broadcast.publish(channel, message)


def notify_scheduler() -> None:
    scheduler = state().scheduler
    if scheduler is not None:
        scheduler.notify()


def _secret_key(instance: Path) -> str:
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    # instance/ next to this file: the SQLite database and the generated secret key
    app = Flask(__name__, instance_path=str(Path(__file__).resolve().parent / "instance"))
    config = dict(config or {})
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    app.config.update(
        DATABASE_URL=os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'monitor.db'}",
        MONITOR_SEED=os.environ.get("MONITOR_SEED", "1") not in ("0", "false", "no"),
        MONITOR_SCHEDULER=True,
        MONITOR_CONCURRENCY=int(os.environ.get("MONITOR_CONCURRENCY", "50")),
        MONITOR_MIN_INTERVAL=1,
        MONITOR_KEEP_CHECKS=2000,
        # The dashboard's event stream is endless: don't let it hold a shutdown for 10 s.
        FLASK_ASGI_SHUTDOWN_TIMEOUT=3,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or _secret_key(instance)

    if not logger.handlers:  # the seed message (URL, demo sign-in) must reach the console
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    asgi = flask_asgi.ASGI(app)
    app.extensions["monitor"] = State(asgi)
    login_manager.init_app(app)
    csrf.init_app(app)

    from . import api, auth, dashboard, demo

    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(demo.bp)
    csrf.exempt(api.bp)  # see api.py: JSON-only, SameSite=Lax session cookie
    csrf.exempt(demo.bp)

    @asgi.while_serving
    async def lifespan() -> AsyncIterator[None]:
        await open_resources(app)
        try:
            yield
        finally:
            await close_resources(app)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            body = {"error": error.name, "message": error.description}
            response = jsonify(body)
            response.status_code = error.code or 500
            return response
        return error

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return http_error(error)

    @app.cli.command("create-user")
    def create_user_command() -> None:
        """Create a user: flask --app examples/monitor create-user"""
        import asyncio

        import click

        email = click.prompt("Email")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

        async def create() -> None:
            db = Store(app.config["DATABASE_URL"])
            try:
                await db.create_schema()
                await db.create_user(email, generate_password_hash(password))
            finally:
                await db.dispose()

        asyncio.run(create())
        click.echo(f"created {email}")

    return app


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    # The loader is sync (Flask-Login calls it from `current_user`); the engine is async.
    # `await_` runs the query on the server loop, wherever `current_user` is first used: in
    # an async view (flask-asgi steps its coroutine in the request greenlet), a sync hook,
    # or a worker thread (sync endpoints such as /static).
    try:
        return flask_asgi.await_(store().get_user(int(user_id)))
    except ValueError:
        return None


async def open_resources(app: Flask) -> None:
    """Startup, on the server loop: the engine, the HTTP client, the scheduler."""
    shared = state(app)
    db = Store(app.config["DATABASE_URL"])
    try:
        await db.create_schema()
    except Exception:
        await db.dispose()
        raise
    shared.store = db
    http = make_http_client(app.config["MONITOR_CONCURRENCY"])
    app.extensions["monitor_http"] = http
    if app.config["MONITOR_SEED"]:
        from .demo import seed_user

        await seed_user(app)
    if app.config["MONITOR_SCHEDULER"]:
        # The scheduler runs for as long as the server does, so it is not an
        # `add_background_task` task: shutdown waits for those to finish (then cancels
        # them after FLASK_ASGI_SHUTDOWN_TIMEOUT with a warning), and `wait_background_tasks`
        # would never return. This hook owns it instead: started here, cancelled below.
        shared.scheduler = Scheduler(
            db,
            http,
            publish,
            concurrency=app.config["MONITOR_CONCURRENCY"],
            keep_checks=app.config["MONITOR_KEEP_CHECKS"],
        )
        shared.scheduler.start()
    logger.info(
        "monitor: database %s, scheduler %s",
        db.engine.url.render_as_string(),
        "on" if shared.scheduler else "off",
    )


async def close_resources(app: Flask) -> None:
    shared = state(app)
    if shared.scheduler is not None:
        await shared.scheduler.stop()
        shared.scheduler = None
    http = app.extensions.pop("monitor_http", None)
    if http is not None:
        await http.close()
    if shared.store is not None:
        await shared.store.dispose()
        shared.store = None


_default: flask_asgi.ASGI | None = None


def __getattr__(name: str) -> Any:
    # `uvicorn examples.monitor:asgi`: the app is made on first access, not at import, so
    # that `flask --app examples/monitor` uses create_app() and tests make their own apps.
    global _default
    if name == "asgi":
        if _default is None:
            _default = state(create_app()).asgi
        return _default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def current_user_id() -> int:
    return int(current_user.id)
