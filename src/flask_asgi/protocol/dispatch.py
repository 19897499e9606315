"""Which view a request matches, and whether that view is async.

An async endpoint runs in a request greenlet on the server loop (its awaits are native);
a sync endpoint runs whole in a worker thread, with exact WSGI semantics, so blocking code
never stalls the loop. These functions answer for one view or one request; the HTTP path
asks ``routes.RouteIndex``, which remembers their answers, and WebSocket routing asks
:func:`view_is_async` directly.
"""

from __future__ import annotations

import inspect
from typing import Any

from flask import Flask


def _is_coroutine_function(func: Any) -> bool:
    # Sync decorators such as Flask-Login's login_required wrap async views with
    # functools.wraps: look through __wrapped__ to the view itself.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(inspect.unwrap(func))


def view_is_async(view: Any, method: str) -> bool:
    """True when ``view`` (a function, or a ``View``/``MethodView``) is async for ``method``."""
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return _is_coroutine_function(view)
    handler = getattr(view_class, method.lower(), None)
    if handler is None and method == "HEAD":
        handler = getattr(view_class, "get", None)
    if handler is not None and _is_coroutine_function(handler):
        return True
    return _is_coroutine_function(view_class.dispatch_request)


def match_endpoint(app: Flask, environ: dict[str, Any]) -> str | None:
    """The endpoint the request matches, as Flask will match it; None for 404, 405,
    redirects and bad hosts, which Flask answers without a view."""
    try:
        adapter = app.create_url_adapter(app.request_class(environ))
        assert adapter is not None
        endpoint, _ = adapter.match(method=environ["REQUEST_METHOD"])
    except Exception:
        return None
    return str(endpoint)


def path_key(environ: dict[str, Any]) -> tuple[str, str, str, str]:
    """What a URL match depends on: method, host, script name and path."""
    return (
        environ["REQUEST_METHOD"],
        environ.get("HTTP_HOST", ""),
        environ["SCRIPT_NAME"],
        environ["PATH_INFO"],
    )
