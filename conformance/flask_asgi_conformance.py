"""pytest plugin: run Flask's own test suite with every app served by flask-asgi.

Loaded with ``-p flask_asgi_conformance`` while running the tests of Flask's sdist. Every
``Flask`` created by a test is wrapped by ``flask_asgi.ASGI``, and every test-client request
(also from ``FlaskClient`` subclasses a test defines) goes through the ASGI path. The plugin
counts the requests that took that path, so a run that silently bypassed it is visible.

With ``CONFORMANCE_ASYNC_VIEWS=1`` every view a test registers is also made ``async def``
(a coroutine function that calls it), so the whole suite runs its views on the async path:
request greenlets, the bridge, ``ensure_sync`` for views.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

import flask
import flask.testing
import pytest

import flask_asgi.protocol.http
import flask_asgi.testing
from flask_asgi import ASGI

_original_init = flask.Flask.__init__
_original_handle = flask_asgi.protocol.http.HttpHandler.__call__
asgi_requests = 0


def _init(self: flask.Flask, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    ASGI(self)


async def _counting_handle(self: Any, *args: Any) -> None:
    global asgi_requests
    asgi_requests += 1
    await _original_handle(self, *args)


_async_of: dict[Any, Any] = {}  # one wrapper per view: Flask compares them on re-register


def _as_async(view: Any) -> Any:
    if view is None or inspect.iscoroutinefunction(view) or not inspect.isfunction(view):
        return view
    if view not in _async_of:

        @functools.wraps(view)  # keeps view_class, methods...: Flask reads them off the view
        async def async_view(*args: Any, **kwargs: Any) -> Any:
            return view(*args, **kwargs)

        _async_of[view] = async_view
    return _async_of[view]


_original_add_url_rule = flask.Flask.add_url_rule


def _add_url_rule(
    self: flask.Flask,
    rule: str,
    endpoint: Any = None,
    view_func: Any = None,
    *args: Any,
    **kwargs: Any,
) -> None:
    _original_add_url_rule(self, rule, endpoint, _as_async(view_func), *args, **kwargs)


if os.environ.get("CONFORMANCE_ASYNC_VIEWS") == "1":
    flask.Flask.add_url_rule = _add_url_rule  # type: ignore[method-assign]
flask.Flask.__init__ = _init  # type: ignore[method-assign]
flask_asgi.protocol.http.HttpHandler.__call__ = _counting_handle  # type: ignore[method-assign]
flask.testing.FlaskClient.run_wsgi_app = (  # type: ignore[method-assign]
    flask_asgi.testing.FlaskClient.run_wsgi_app
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"flask-asgi: {asgi_requests} requests went through ASGI")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flask_asgi: run through flask-asgi")
