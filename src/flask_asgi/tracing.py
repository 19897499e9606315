"""Span names by route for OpenTelemetry's ASGI middleware (docs/observability.md).

``OpenTelemetryMiddleware`` names a server span before the app runs, from the raw path
(``GET /items/42``), which makes one span name per item. Flask knows the route only once it
has matched the URL; this callable, passed as the middleware's ``default_span_details``,
matches the scope against the app's URL map first (Werkzeug's router, no request context)
and gives ``GET /items/<int:item_id>``, as ``opentelemetry-instrumentation-flask`` names
its spans. Nothing of OpenTelemetry is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect


def route_span_details(app: Flask) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]:
    """``OpenTelemetryMiddleware(asgi, default_span_details=route_span_details(app))``."""

    def details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        websocket = scope.get("type") == "websocket"
        method = "GET" if websocket else str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        adapter = app.url_map.bind("localhost", script_name=root or None)
        try:
            rule, _ = adapter.match(path, method=method, return_rule=True, websocket=websocket)
        except (HTTPException, RequestRedirect):
            return (path if websocket else method or "HTTP"), {}
        route = rule.rule
        return (route if websocket else f"{method} {route}"), {"http.route": route}

    return details
