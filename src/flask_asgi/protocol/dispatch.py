"""Decide, per request, whether Flask's pipeline runs on the loop or in a worker thread.

An async endpoint runs in a request greenlet on the server loop (its awaits are native);
a sync endpoint runs whole in a worker thread, with exact WSGI semantics, so blocking code
never stalls the loop. The choice comes from the view the URL matches.
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


_PATH_CACHE_SIZE = 10_000


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


class EndpointClassifier:
    """Answers "does this request match an async view?" for one app."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._views_seen = -1
        self._uniform: bool | None = None  # all views async (True), all sync (False), or mixed
        self._static_prefix: str | None = None  # app.static_url_path is computed on each access
        self._by_endpoint: dict[tuple[str, str], bool] = {}
        # Matching a URL costs more than the rest of our per-request work, so answers are
        # remembered per (method, host, path). A stale answer could only pick the less
        # efficient place to run (both places run any view correctly), and the cache is
        # dropped whenever views are added.
        self._by_path: dict[tuple[str, str, str, str], bool] = {}

    def _refresh(self) -> None:
        views = self.app.view_functions
        self._views_seen = len(views)
        self._by_endpoint.clear()
        self._by_path.clear()
        kinds = {view_is_async(view, "GET") for name, view in views.items() if name != "static"}
        has_class_views = any(hasattr(view, "view_class") for view in views.values())
        self._uniform = kinds.pop() if len(kinds) == 1 and not has_class_views else None
        static = self.app.static_url_path if "static" in views else None
        self._static_prefix = static + "/" if static else None

    def is_async(self, environ: dict[str, Any]) -> bool:
        if len(self.app.view_functions) != self._views_seen:
            self._refresh()
        if self._uniform is not None:
            static = self._static_prefix
            if self._uniform and static and environ["PATH_INFO"].startswith(static):
                return False  # static files are read from disk: keep that off the loop
            return self._uniform
        key = path_key(environ)
        answer = self._by_path.get(key)
        if answer is None:
            if len(self._by_path) >= _PATH_CACHE_SIZE:
                self._by_path.clear()
            answer = self._by_path[key] = self._match(environ, key[0])
        return answer

    def _match(self, environ: dict[str, Any], method: str) -> bool:
        app = self.app
        endpoint = match_endpoint(app, environ)
        if endpoint is None:
            return False  # Flask answers 404, 405, redirects itself: any thread will do
        key = (endpoint, method)
        answer = self._by_endpoint.get(key)
        if answer is None:
            view = app.view_functions.get(endpoint)
            answer = view is not None and view_is_async(view, method)
            self._by_endpoint[key] = answer
        return answer
