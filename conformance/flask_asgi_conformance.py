"""pytest plugin: run Flask's own test suite with every app served by flask-asgi.

Loaded with ``-p flask_asgi_conformance`` while running the tests of Flask's sdist. Every
``Flask`` created by a test is wrapped by ``flask_asgi.ASGI``, and every test-client request
(also from ``FlaskClient`` subclasses a test defines) goes through the ASGI path. The plugin
counts the requests that took that path, so a run that silently bypassed it is visible.
"""

from __future__ import annotations

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
