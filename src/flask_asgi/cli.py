"""``flask --app module serve``: serve any Flask app on uvicorn, no code change needed.

Registered through the ``flask.commands`` entry point. With ``--workers`` or ``--reload``
uvicorn starts its own processes, which cannot be handed an app object: they import this
module's :func:`app_factory`, which finds the app again the way the ``flask`` command did.
"""

from __future__ import annotations

import os

import click
import uvicorn
from flask.cli import ScriptInfo, pass_script_info

from .extension import ASGI
from .server import uvicorn_config

_APP_ENV = "FLASK_ASGI_CLI_APP"


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
@pass_script_info
def serve_command(
    info: ScriptInfo,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    log_level: str,
    root_path: str,
) -> None:
    options = {"log_level": log_level, "root_path": root_path}
    if workers > 1 or reload:
        if info.app_import_path:
            os.environ[_APP_ENV] = info.app_import_path
        info.load_app()  # fail here, with Flask's message, if the app cannot be found
        config = uvicorn_config(
            "flask_asgi.cli:app_factory",
            host,
            port,
            factory=True,
            workers=workers,
            reload=reload,
            **options,
        )
    else:
        config = uvicorn_config(ASGI.of(info.load_app()), host, port, **options)
    server = uvicorn.Server(config)
    if config.should_reload or config.workers > 1:
        sock = config.bind_socket()
        if config.should_reload:
            from uvicorn.supervisors import ChangeReload

            ChangeReload(config, target=server.run, sockets=[sock]).run()
        else:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, target=server.run, sockets=[sock]).run()
        return
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's code for a failed startup
