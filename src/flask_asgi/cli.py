"""``flask --app module serve``: serve any Flask app on uvicorn, no code change needed.

Registered through the ``flask.commands`` entry point. With ``--workers`` or ``--reload``
uvicorn starts its own processes, which cannot be handed an app object: they import this
module's :func:`app_factory`, which finds the app again the way the ``flask`` command did.
"""

from __future__ import annotations

import os
from typing import Any

import click
import uvicorn
from flask.cli import ScriptInfo, pass_script_info

from .extension import ASGI
from .ground.config import DEFAULTS
from .server import uvicorn_config

_APP_ENV = "FLASK_ASGI_CLI_APP"
_SHUTDOWN_KEY = "FLASK_ASGI_SHUTDOWN_TIMEOUT"


def app_factory() -> ASGI:
    """Load the app for a uvicorn worker process (``--workers``/``--reload``)."""
    info = ScriptInfo(app_import_path=os.environ.get(_APP_ENV) or None)
    return ASGI.of(info.load_app())


@click.command("serve", help="Serve the app on uvicorn through flask-asgi.")
@click.option("--host", "-h", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", "-p", default=5000, show_default=True, help="Port to bind.")
@click.option("--workers", "-w", default=1, show_default=True, help="Worker processes.")
@click.option("--reload/--no-reload", default=False, help="Restart when code changes.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
)
@click.option("--root-path", default="", help="Mount point when behind a proxy prefix.")
@click.option(
    "--timeout-graceful-shutdown",
    type=float,
    default=None,
    help="On shutdown, seconds to let in-flight requests finish before cancelling them"
    " (default: the app's FLASK_ASGI_SHUTDOWN_TIMEOUT, 10).",
)
@pass_script_info
def serve_command(
    info: ScriptInfo,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    log_level: str,
    root_path: str,
    timeout_graceful_shutdown: float | None,
) -> None:
    options: dict[str, Any] = {"log_level": log_level, "root_path": root_path}
    if workers > 1 or reload:
        # uvicorn's own processes cannot be handed an app object: they import the factory.
        if info.app_import_path:
            os.environ[_APP_ENV] = info.app_import_path
        info.load_app()  # fail here, with Flask's message, if the app cannot be found
        target: Any = "flask_asgi.cli:app_factory"
        options.update(factory=True, workers=workers, reload=reload)
    else:
        target = ASGI.of(info.load_app())
    if timeout_graceful_shutdown is None:  # load_app() is cached: the app loaded above
        config = info.load_app().config
        timeout_graceful_shutdown = float(config.get(_SHUTDOWN_KEY, DEFAULTS[_SHUTDOWN_KEY]))
    options["timeout_graceful_shutdown"] = timeout_graceful_shutdown
    server = uvicorn.Server(uvicorn_config(target, host, port, **options))
    if server.config.should_reload or server.config.workers > 1:
        uvicorn.run(target, host=host, port=port, lifespan="on", **options)
        return
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's code for a failed startup
