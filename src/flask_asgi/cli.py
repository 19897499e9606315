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
from flask.helpers import get_debug_flag
from werkzeug.debug import DebuggedApplication

from .extension import ASGI
from .ground.settings import DEFAULTS
from .server import graceful_server, uvicorn_config
from .servers import NAMES, ServeOptions, ServerMissing, run_server

_APP_ENV = "FLASK_ASGI_CLI_APP"
_SHUTDOWN_KEY = "FLASK_ASGI_SHUTDOWN_TIMEOUT"
_THRESHOLD_KEY = "FLASK_ASGI_BLOCKING_THRESHOLD"
_DEBUG_THRESHOLD = 0.1  # seconds, under --debug


def app_factory() -> ASGI:
    """Load the app for a uvicorn worker process (``--workers``/``--reload``)."""
    info = ScriptInfo(app_import_path=os.environ.get(_APP_ENV) or None)
    return debug_setup(ASGI.of(info.load_app()))


def debug_setup(asgi: ASGI) -> ASGI:
    """Under ``flask --debug serve``, serve like ``flask --debug run`` does: Werkzeug's
    interactive debugger (with its PIN) around ``app.wsgi_app``, so an exception in any view
    shows the traceback page; and a 0.1 s loop-watchdog threshold unless one was chosen."""
    app = asgi.app
    if not get_debug_flag():
        return asgi
    if not isinstance(app.wsgi_app, DebuggedApplication):
        debugger = DebuggedApplication(app.wsgi_app, evalex=True)
        app.wsgi_app = debugger  # type: ignore[method-assign]
        click.echo(" * Debugger is active!", err=True)
        pin = debugger.pin
        click.echo(f" * Debugger PIN: {pin}" if pin else " * Debugger PIN disabled.", err=True)
    if (
        _THRESHOLD_KEY not in os.environ
        and app.config.get(_THRESHOLD_KEY) == DEFAULTS[_THRESHOLD_KEY]
    ):
        app.config[_THRESHOLD_KEY] = _DEBUG_THRESHOLD
    return asgi


@click.command("serve", help="Serve the app on uvicorn (or --server) through flask-asgi.")
@click.option(
    "--server",
    "server_name",
    default=NAMES[0],
    show_default=True,
    type=click.Choice(NAMES),
    help="The ASGI server (granian and hypercorn: pip install 'flask-asgi[granian]'...).",
)
@click.option("--host", "-h", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", "-p", default=5000, show_default=True, help="Port to bind.")
@click.option("--workers", "-w", default=1, show_default=True, help="Worker processes.")
@click.option(
    "--reload/--no-reload",
    default=None,
    help="Restart when code changes (default: on under flask --debug, as flask run).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
)
@click.option("--root-path", default="", help="Mount point when behind a proxy prefix.")
@click.option(
    "--loop",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    help="The event loop (auto: the server's default, uvloop when installed on uvicorn and"
    " granian). asyncio serves an overloaded process more evenly (docs/deployment.md).",
)
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
    server_name: str,
    host: str,
    port: int,
    workers: int,
    reload: bool | None,
    log_level: str,
    root_path: str,
    loop: str,
    timeout_graceful_shutdown: float | None,
) -> None:
    options: dict[str, Any] = {"log_level": log_level, "root_path": root_path, "loop": loop}
    if reload is None:
        reload = get_debug_flag()
    if workers > 1 or reload:
        # uvicorn's own processes cannot be handed an app object: they import the factory.
        if info.app_import_path:
            os.environ[_APP_ENV] = info.app_import_path
        info.load_app()  # fail here, with Flask's message, if the app cannot be found
        target: Any = "flask_asgi.cli:app_factory"
        options.update(factory=True, workers=workers, reload=reload)
    else:
        target = debug_setup(ASGI.of(info.load_app()))
    if timeout_graceful_shutdown is None:  # load_app() is cached: the app loaded above
        config = info.load_app().config
        timeout_graceful_shutdown = float(config.get(_SHUTDOWN_KEY, DEFAULTS[_SHUTDOWN_KEY]))
    options["timeout_graceful_shutdown"] = timeout_graceful_shutdown
    if server_name != "uvicorn":  # flask_asgi.servers maps the same options to the other servers
        if info.app_import_path:
            os.environ[_APP_ENV] = info.app_import_path
        chosen = ServeOptions(
            host, port, workers, reload, log_level, root_path, timeout_graceful_shutdown, loop
        )
        try:
            status = run_server(server_name, "flask_asgi.cli:app_factory", chosen)
        except ServerMissing as missing:
            raise click.UsageError(str(missing)) from None
        if status:
            raise SystemExit(status)
        return
    server_config = uvicorn_config(target, host, port, **options)
    if server_config.should_reload or server_config.workers > 1:
        uvicorn.run(target, host=host, port=port, lifespan="on", **options)
        return
    # One process: the port is bound before any startup hook, and SIGTERM loses nothing.
    server, sockets = graceful_server(target, server_config)
    server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # uvicorn's code for a failed startup
