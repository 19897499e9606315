"""OpenTelemetry works unchanged: Flask and ASGI instrumentation, spans named by route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask

import flask_asgi
from flask_asgi.tracing import route_span_details

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: E402
from opentelemetry.instrumentation.flask import FlaskInstrumentor  # noqa: E402
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    yield provider, exporter
    HTTPXClientInstrumentor().uninstrument()


def traced_app(app: Flask) -> Flask:
    @app.get("/items/<int:item_id>")
    async def item(item_id: int) -> Any:
        # An awaited httpx call: its span is a child of this request's span, and the
        # upstream request (this same server) continues the trace.
        async with httpx.AsyncClient(timeout=10) as client:
            upstream = await client.get(app.config["BASE"] + f"/sync/{item_id}")
        return {"item": item_id, "upstream": upstream.json()}

    @app.get("/sync/<int:item_id>")
    def sync_item(item_id: int) -> Any:
        return {"sync": item_id}

    return app


def no_detach_errors(caplog: pytest.LogCaptureFixture) -> bool:
    return not [r for r in caplog.records if "Failed to detach context" in r.getMessage()]


def test_flask_instrumentation_names_spans_by_route_and_carries_the_trace(
    app: Flask, tracing: Any, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    provider, exporter = tracing
    traced_app(app)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)  # wraps app.wsgi_app
    base = live_server(flask_asgi.ASGI(app))
    app.config["BASE"] = base
    reply = httpx.get(base + "/items/7", timeout=10)
    assert reply.json() == {"item": 7, "upstream": {"sync": 7}}
    spans = exporter.get_finished_spans()
    servers = {s.name: s for s in spans if s.kind == SpanKind.SERVER}
    assert set(servers) == {"GET /items/<int:item_id>", "GET /sync/<int:item_id>"}
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    outer, inner = servers["GET /items/<int:item_id>"], servers["GET /sync/<int:item_id>"]
    # async view -> awaited httpx call -> the sync view's request: one trace, parent links.
    assert client.parent is not None and client.parent.span_id == outer.context.span_id
    assert inner.parent is not None and inner.parent.span_id == client.context.span_id
    assert len({s.context.trace_id for s in (outer, client, inner)}) == 1
    assert outer.attributes is not None and outer.attributes["http.route"] == "/items/<int:item_id>"
    assert no_detach_errors(caplog)


def test_asgi_middleware_names_spans_by_route(
    app: Flask, tracing: Any, live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    provider, exporter = tracing
    traced_app(app)
    asgi = flask_asgi.ASGI(app)
    traced = OpenTelemetryMiddleware(
        asgi, tracer_provider=provider, default_span_details=route_span_details(app)
    )
    base = live_server(traced)
    app.config["BASE"] = base
    assert httpx.get(base + "/items/3", timeout=10).json()["upstream"] == {"sync": 3}
    assert httpx.get(base + "/nowhere", timeout=10).status_code == 404
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    names = sorted(s.name for s in servers)
    assert names == ["GET", "GET /items/<int:item_id>", "GET /sync/<int:item_id>"]
    client = next(s for s in spans if s.kind == SpanKind.CLIENT)
    outer = next(s for s in servers if s.name == "GET /items/<int:item_id>")
    inner = next(s for s in servers if s.name == "GET /sync/<int:item_id>")
    assert client.context.trace_id == outer.context.trace_id == inner.context.trace_id
    assert inner.parent is not None and inner.parent.span_id == client.context.span_id
    assert no_detach_errors(caplog)


def test_route_span_details_for_websockets_and_root_paths(app: Flask) -> None:
    asgi = flask_asgi.ASGI(app)

    @asgi.websocket("/ws/<room>")
    async def chat(room: str) -> None:
        pass

    @app.post("/things/<name>")
    def thing(name: str) -> str:
        return name

    details = route_span_details(app)
    assert details({"type": "websocket", "path": "/ws/blue"}) == (
        "/ws/<room>",
        {"http.route": "/ws/<room>"},
    )
    scope = {"type": "http", "method": "POST", "path": "/api/things/x", "root_path": "/api"}
    assert details(scope) == ("POST /things/<name>", {"http.route": "/things/<name>"})
    assert details({"type": "http", "method": "GET", "path": "/things/x"}) == ("GET", {})
