"""``asgi.add_middleware(cls, **options)``: ASGI middleware around the whole app (Flask, the
mounted apps, the lifespan), with real middleware: Starlette's GZip, OpenTelemetry's."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest
from flask import Flask
from helpers import run_live
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse

import flask_asgi

TEXT = "flask-asgi " * 200


def test_gzip_wraps_flask_and_mounted_apps_on_uvicorn(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @app.get("/text")
    async def text() -> str:
        return TEXT

    asgi.mount("/starlette", PlainTextResponse(TEXT))
    asgi.add_middleware(GZipMiddleware, minimum_size=100)
    with run_live(asgi) as base:
        for path in ("/text", "/starlette"):
            with httpx.stream("GET", base + path, headers={"accept-encoding": "gzip"}) as got:
                assert got.headers["content-encoding"] == "gzip"
                raw = b"".join(got.iter_raw())  # the bytes on the wire, not decoded by httpx
            assert len(raw) < len(TEXT) / 10
            assert gzip.decompress(raw).decode() == TEXT
        plain = httpx.get(base + "/text", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.text == TEXT


def test_gzip_through_the_test_client(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @app.get("/text")
    def text() -> str:
        return TEXT

    asgi.add_middleware(GZipMiddleware, minimum_size=100)
    response = app.test_client().get("/text", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(response.data).decode() == TEXT


def test_opentelemetry_spans_for_flask_and_mounted_requests(
    app: Flask, asgi: flask_asgi.ASGI
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: dict[str, Any] = {}

    @app.get("/items/<int:item>")
    async def item(item: int) -> dict[str, int]:
        seen["span"] = trace.get_current_span().get_span_context()
        return {"item": item}

    asgi.mount("/other", PlainTextResponse("other"))
    asgi.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
    with run_live(asgi) as base:
        assert httpx.get(base + "/items/7").json() == {"item": 7}
        assert httpx.get(base + "/other/x").text == "other"
        assert httpx.get(base + "/missing").status_code == 404
    servers = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    statuses = [
        (
            s.attributes.get("url.path") or s.attributes.get("http.target"),
            s.attributes.get("http.response.status_code") or s.attributes.get("http.status_code"),
        )
        for s in servers
    ]
    assert statuses == [("/items/7", 200), ("/other/x", 200), ("/missing", 404)]
    # The Flask view runs inside the request's server span.
    assert seen["span"].trace_id == servers[0].context.trace_id


def test_last_added_is_outermost_and_lifespan_goes_through(
    app: Flask, asgi: flask_asgi.ASGI
) -> None:
    calls: list[str] = []

    class Tag:
        def __init__(self, app: Any, name: str) -> None:
            self.app, self.name = app, name

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            calls.append(f"{self.name}:{scope['type']}")
            await self.app(scope, receive, send)

    @app.get("/")
    def index() -> str:
        return "ok"

    asgi.add_middleware(Tag, name="inner")
    asgi.add_middleware(Tag, name="outer")
    with asgi.serving():
        assert app.test_client().get("/").text == "ok"
    assert calls == ["outer:lifespan", "inner:lifespan", "outer:http", "inner:http"]


def test_bad_middleware_is_refused_and_not_kept(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @app.get("/")
    def index() -> str:
        return "ok"

    with pytest.raises(TypeError, match="needs a middleware class"):
        asgi.add_middleware("GZipMiddleware")
    with pytest.raises(TypeError, match="no_such_option"):
        asgi.add_middleware(GZipMiddleware, no_such_option=1)
    assert asgi.state.middleware == []
    assert app.test_client().get("/").text == "ok"
