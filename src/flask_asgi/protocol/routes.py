"""One app's route index: what the request path needs to know of the view a request matches.

Two questions are asked of every HTTP request: does its endpoint run on the loop (an
``async def`` view, in a request greenlet) or in a worker thread (a sync view, with exact
WSGI semantics, so blocking code never stalls the loop)? And which request timeout applies
(the view's ``@flask_asgi.timeout`` mark, else FLASK_ASGI_REQUEST_TIMEOUT)? Both answers
come from the view the URL matches, and matching a URL costs more than the rest of our
per-request work, so :class:`RouteIndex` answers both from one match, remembered per
(method, host, script, path), and avoids matching at all when the answers cannot differ.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..ground.view_timeout import UNSET, Unset, view_timeout
from .dispatch import match_endpoint, path_key, view_is_async

#: What the request path needs of a route: (is the endpoint async?, the view's timeout mark).
#: The mark is UNSET when the view has none (FLASK_ASGI_REQUEST_TIMEOUT applies).
Route = tuple[bool, "float | None | Unset"]

SYNC: Route = (False, UNSET)
ASYNC: Route = (True, UNSET)

#: Paths remembered per app; past it the cache starts again (a crawler's unique URLs must
#: not grow it without end).
_PATH_CACHE_SIZE = 10_000


def _is_marked(view: Any) -> bool:
    view_class = getattr(view, "view_class", None)
    methods = {"GET", *(getattr(view_class, "methods", None) or ())} if view_class else {"GET"}
    return any(view_timeout(view, method) is not UNSET for method in methods)


class RouteIndex:
    """``lookup(environ)``: the :data:`Route` of one request to one app.

    An app whose views are all async (or all sync), with no class-based view and no timeout
    mark, gets the same answer for every request: no URL is matched (static files still run
    in a worker thread under an all-async app: they are read from disk). Any other app pays
    one URL match per new (method, host, script, path). A stale answer could only pick the
    less efficient place to run (both run any view correctly) or a timeout the view no
    longer has, and everything is recomputed whenever views are added.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._views_seen = -1
        self._uniform: Route | None = None  # the answer for every request, if there is one
        self._unmatched: Route = SYNC  # 404, 405, redirects: Flask answers without a view
        self._static_prefix: str | None = None  # under a uniform all-async app only
        self._by_endpoint: dict[tuple[str, str], Route] = {}
        self._by_path: dict[tuple[str, str, str, str], Route] = {}

    def _refresh(self) -> None:
        app = self.app
        views = app.view_functions
        self._views_seen = len(views)
        self._by_endpoint.clear()
        self._by_path.clear()
        kinds = {view_is_async(view, "GET") for name, view in views.items() if name != "static"}
        has_class_views = any(hasattr(view, "view_class") for view in views.values())
        kind = kinds.pop() if len(kinds) == 1 and not has_class_views else None
        # Where nothing matches, a uniform app's requests run where its views do, as ever.
        self._unmatched = ASYNC if kind else SYNC
        marked = any(_is_marked(view) for view in views.values())
        self._uniform = None if kind is None or marked else self._unmatched
        # app.static_url_path is computed on each access: once here.
        static = app.static_url_path if kind and "static" in views else None
        self._static_prefix = static + "/" if static else None

    def lookup(self, environ: dict[str, Any]) -> Route:
        """(is the endpoint async?, its view's timeout mark) for this request."""
        if len(self.app.view_functions) != self._views_seen:
            self._refresh()
        uniform = self._uniform
        if uniform is not None:
            static = self._static_prefix
            if static and environ["PATH_INFO"].startswith(static):
                return SYNC
            return uniform
        key = path_key(environ)
        route = self._by_path.get(key)
        if route is None:
            if len(self._by_path) >= _PATH_CACHE_SIZE:
                self._by_path.clear()
            route = self._by_path[key] = self._match(environ, key[0])
        return route

    def _match(self, environ: dict[str, Any], method: str) -> Route:
        app = self.app
        endpoint = match_endpoint(app, environ)
        if endpoint is None:
            return self._unmatched
        key = (endpoint, method)
        route = self._by_endpoint.get(key)
        if route is None:
            view = app.view_functions.get(endpoint)
            if view is None:
                route = SYNC
            else:
                route = (view_is_async(view, method), view_timeout(view, method))
            self._by_endpoint[key] = route
        return route
