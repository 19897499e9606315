"""``flask --app module serve``: serve any Flask app on uvicorn, no code change needed.

Registered through the ``flask.commands`` entry point. The server comes from the registry
(:mod:`flask_asgi.serving`). A server that cannot be handed an app object (granian,
hypercorn, uvicorn with ``--workers`` or ``--reload``) starts processes that import this
module's :func:`app_factory`, which finds the app again the way the ``flask`` command did.
"""

from __future__ import annotations

import ipaddress
import os

import click
from click.core import ParameterSource
from flask.cli import ScriptInfo, pass_script_info
from flask.helpers import get_debug_flag
from werkzeug.debug import DebuggedApplication

from .extension import ASGI
from .ground.settings import DEFAULTS, SettingError
from .protocol.wsgi_entry import wsgi_blockers
from .serving import DEFAULT, SERVERS, ServerMissing, serve_options
from .serving.options import ROOT_PATH_ENV, UnderRootPath

_APP_ENV = "FLASK_ASGI_CLI_APP"
#: What a server's own processes call to load the app (``--workers``, ``--reload``, ...).
APP_FACTORY = "flask_asgi.cli:app_factory"
_THRESHOLD_KEY = "FLASK_ASGI_BLOCKING_THRESHOLD"
_DEBUG_THRESHOLD = 0.1  # seconds, under --debug


def app_factory() -> ASGI | UnderRootPath:
    """Load the app in a server's own process (granian, hypercorn, uvicorn's
    ``--workers``/``--reload``); under the root path granian and hypercorn were not given."""
    info = ScriptInfo(app_import_path=os.environ.get(_APP_ENV) or None)
    asgi = debug_setup(ASGI.of(info.load_app()))
    root_path = os.environ.get(ROOT_PATH_ENV, "")
    return UnderRootPath(asgi, root_path) if root_path else asgi


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


_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    """Only this machine can connect to ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything: treat as public


def debug_source() -> str:
    """Where debug mode came from: ``--debug``, or ``FLASK_DEBUG`` left in the environment
    (Flask's --debug writes FLASK_DEBUG itself, so only the root context tells them apart)."""
    root = click.get_current_context().find_root()
    given = root.get_parameter_source("debug") is ParameterSource.COMMANDLINE
    return "--debug" if given else "FLASK_DEBUG in the environment"


def check_debug_host(host: str, allow_remote: bool) -> None:
    """Under debug mode, say so (like flask run), and refuse to show the interactive debugger
    beyond this machine unless asked: it runs any Python code a visitor types."""
    if not get_debug_flag():
        return
    click.echo(f" * Debug mode: on (from {debug_source()})", err=True)
    if is_loopback(host):
        return
    if not allow_remote:
        raise click.UsageError(
            f"debug mode serves Werkzeug's interactive debugger, which runs any Python code"
            f" a visitor types, and --host {host} lets other machines reach it. Serve on"
            " 127.0.0.1, turn debug mode off (--no-debug, or unset FLASK_DEBUG), or pass"
            " --allow-remote-debugger if every machine that can reach this host is trusted."
        )
    click.secho(
        f"WARNING: debug mode on --host {host}: any machine that reaches it gets tracebacks"
        " with source and, with the PIN, a Python shell. Never do this in production.",
        fg="red",
        err=True,
    )


@click.command("serve", help="Serve the app on uvicorn (or --server) through flask-asgi.")
@click.option(
    "--server",
    "server_name",
    default=DEFAULT.name,
    show_default=True,
    type=click.Choice(list(SERVERS)),
    help="The ASGI server (granian and hypercorn: flask-asgi's [granian] and [hypercorn] extras).",
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
@click.option(
    "--interface",
    type=click.Choice(["asgi", "wsgi"]),
    default=None,
    help="How the server calls the app (default: the app's FLASK_ASGI_INTERFACE, asgi)."
    " wsgi: an all-sync app through granian's WSGI interface, faster, without the slow-client"
    " defences (docs/deployment.md).",
)
@click.option(
    "--allow-remote-debugger",
    is_flag=True,
    default=False,
    help="Under debug mode, serve on a host other machines can reach (refused otherwise:"
    " the debugger runs any code a visitor types).",
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
    interface: str | None,
    allow_remote_debugger: bool,
) -> None:
    check_debug_host(host, allow_remote_debugger)
    if reload is None:
        reload = get_debug_flag()
    # Fail here, with Flask's message, if the app cannot be found; ASGI.of fills in the
    # app's flask-asgi settings, which go to the server from here (shutdown, header
    # timeout, drain delay): granian and hypercorn take them before a worker loads the app.
    try:
        asgi = ASGI.of(info.load_app())
    except SettingError as bad:  # one line naming the key, not a traceback
        raise click.ClickException(str(bad)) from None
    options = serve_options(
        asgi.app.config, host, port, workers=workers, reload=reload, log_level=log_level,
        root_path=root_path, loop=loop, timeout_graceful_shutdown=timeout_graceful_shutdown,
        interface=interface,
    )  # fmt: skip
    server = SERVERS[server_name]
    if options.interface == "wsgi":
        if server.wsgi_module is None:
            raise click.UsageError(
                f"--interface wsgi (FLASK_ASGI_INTERFACE): --server {server_name} has no WSGI"
                " interface flask-asgi serves through; use --server granian"
            )
        blockers = wsgi_blockers(asgi.app)
        if blockers:  # checked again in each worker, once its app is loaded
            raise click.UsageError(
                "--interface wsgi (FLASK_ASGI_INTERFACE) serves only all-sync apps; this one"
                " has " + "; ".join(blockers) + "."
            )
    try:
        if options.interface == "wsgi":
            if info.app_import_path:
                os.environ[_APP_ENV] = info.app_import_path
            status = server.load("wsgi").run(APP_FACTORY, options)
        elif server.in_process and options.one_process:
            status = server.load_in_process().run_app(debug_setup(asgi), options)
        else:  # the server's processes load the app by import path, through app_factory
            if info.app_import_path:
                os.environ[_APP_ENV] = info.app_import_path
            status = server.load().run(APP_FACTORY, options)
    except ServerMissing as missing:
        raise click.UsageError(str(missing)) from None
    if status:
        raise SystemExit(status)
