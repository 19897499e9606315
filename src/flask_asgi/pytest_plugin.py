"""Strict mode for test suites: fail a test whose async code blocks the event loop.

``pytest --flask-asgi-strict`` (or the ``flask_asgi_strict`` fixture, for some tests only)
runs each test under `BlockBuster <https://github.com/cbornet/blockbuster>`_
(flask-asgi's ``strict`` extra, or ``pip install blockbuster``), which makes blocking calls
(``time.sleep``, file and socket I/O, ``sqlite3``, waiting on a held lock...) raise
``BlockingError`` when they are made on a thread that runs an event loop: an async view's
request greenlet, a ``while_serving`` hook, an async background task. Sync views and
``run_sync`` calls run in worker threads, where blocking is fine, and are left alone.

Flask turns an exception in a view into a 500 response, which a test may not look at, so
the plugin also listens to Flask's ``got_request_exception`` signal and fails the test if a
``BlockingError`` went by. flask-asgi's own set-up and the test clients' side of a request
are allowed to block (:data:`ALLOWED`); the app's code is not.

``flask_asgi_app = module:app`` (an ini line, or ``--flask-asgi-app``) attaches ASGI to the
named app before the first test, as ``flask --app module:app serve`` does: a suite that only
uses ``app.test_client()`` then runs the app as the server runs it, unchanged.

Registered through the ``pytest11`` entry point; it does nothing unless asked.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from flask import got_request_exception

OPTION = "--flask-asgi-strict"
APP_OPTION = "--flask-asgi-app"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flask-asgi")
    group.addoption(
        OPTION,
        action="store_true",
        default=False,
        help="fail a test whose async code makes a blocking call on the event loop"
        " (BlockBuster: flask-asgi's [strict] extra, or pip install blockbuster)",
    )
    group.addoption(
        APP_OPTION,
        action="append",
        default=[],
        metavar="MODULE:APP",
        help="attach ASGI to this app before the first test, as 'flask --app MODULE:APP"
        " serve' does (repeatable; also the flask_asgi_app ini key)",
    )
    parser.addini(
        "flask_asgi_app",
        type="linelist",
        default=[],
        help="apps (module:app, one a line) to attach ASGI to before the first test",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    targets = [*config.getini("flask_asgi_app"), *config.getoption("flask_asgi_app")]
    if not targets:
        return
    from flask.cli import NoAppException, ScriptInfo

    from .extension import ASGI

    for target in targets:
        try:
            app = ScriptInfo(app_import_path=target).load_app()
        except NoAppException as exc:
            raise pytest.UsageError(f"flask_asgi_app = {target}: {exc}") from None
        ASGI.of(app)


#: Where blocking is allowed: flask-asgi's own set-up and the test clients' side of a
#: request (BlockBuster allows a call when one of these functions is on its stack). The
#: app's code never runs under them: a request runs in a task (and greenlet) of its own,
#: whose stack does not reach back to the client that sent it.
ALLOWED: list[tuple[str, set[str]]] = [
    # The watchdog's startup step resolves the directories it leaves out of its reports;
    # its shutdown step joins its (stopped) watcher thread.
    ("flask_asgi/features/watchdog.py", {"_plumbing_dirs", "stop"}),
    # Flask's test client looks up Werkzeug's version (importlib.metadata reads files).
    ("flask/testing.py", {"_get_werkzeug_version"}),
    # The async client builds each request (Werkzeug: environ, cookies, form and file
    # bodies) on the serving loop's thread.
    ("flask_asgi/testing/client.py", {"_open_in_greenlet"}),
    # A sync test client (or ``with asgi.serving()``) used in an async test waits for the
    # serving loop, blocking the test's own loop, not the app's.
    ("flask_asgi/testing/serving_loop.py", {"call_on_serving_loop"}),
]


@contextlib.contextmanager
def strict() -> Iterator[list[BaseException]]:
    """Detect blocking calls on event-loop threads in the block; yield the list of the
    ``BlockingError`` exceptions that Flask handled (turned into responses) meanwhile."""
    try:
        from blockbuster import BlockingError, blockbuster_ctx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise pytest.UsageError(
            f"{OPTION} needs BlockBuster: install flask-asgi's [strict] extra,"
            " or pip install blockbuster"
        ) from exc
    seen: list[BaseException] = []

    def record(sender: Any, exception: BaseException, **extra: Any) -> None:
        if isinstance(exception, BlockingError):
            seen.append(exception)

    got_request_exception.connect(record)
    try:
        with blockbuster_ctx() as blockbuster:
            for function in blockbuster.functions.values():
                for filename, names in ALLOWED:
                    function.can_block_in(filename, names)
            yield seen
    finally:
        got_request_exception.disconnect(record)


def _fail_if_blocked(seen: list[BaseException]) -> None:
    if seen:
        where = "".join(traceback.format_exception(seen[0])[-6:])
        pytest.fail(
            f"{len(seen)} blocking call(s) on the event loop in async code;"
            f" the first one:\n{where}",
            pytrace=False,
        )


_SEEN = pytest.StashKey[list[BaseException]]()


@pytest.fixture
def flask_asgi_strict(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail this test if its async code makes a blocking call on the event loop."""
    with strict() as seen:
        request.node.stash[_SEEN] = seen  # checked right after the test body
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if not item.config.getoption("flask_asgi_strict"):
        result = yield
    else:
        with strict() as seen:
            result = yield
        _fail_if_blocked(seen)
    _fail_if_blocked(item.stash.get(_SEEN, []))
    return result
