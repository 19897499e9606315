"""FLASK_ASGI_REQUEST_TIMEOUT and @flask_asgi.timeout: async views past their timeout are
cancelled (504, teardown sees the error), sync ones are logged once and finish, streams
past it are cut off; per-view marks override the config, None turns the timeout off."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, request
from flask.views import MethodView
from helpers import http_scope, run_live

import flask_asgi
from flask_asgi.features.metrics import stats
from flask_asgi.ground.counters import counters
from flask_asgi.ground.settings import DEFAULTS

LOG = "past its request timeout"


def timeouts_now() -> int:
    return counters.snapshot()["request_timeouts_total"]


async def call(asgi: flask_asgi.ASGI, path: str, method: str = "GET") -> list[dict[str, Any]]:
    """One request through the ASGI callable, from a client that stays connected; the
    messages the app sent."""
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays: no disconnect
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(http_scope(path, method), receive, send)
    return sent


def status_of(sent: list[dict[str, Any]]) -> int:
    assert sent[0]["type"] == "http.response.start"
    return int(sent[0]["status"])


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent[1:])


def timeout_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_asgi" and LOG in r.getMessage() and r.levelno == logging.WARNING
    ]


@pytest.fixture
def served(app: Flask) -> tuple[Flask, flask_asgi.ASGI, list[Any]]:
    """An app whose teardown records the error it sees, and whose slow views record how
    they ended."""
    asgi = flask_asgi.ASGI(app)
    seen: list[Any] = []

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        seen.append(("teardown", request.path, error))

    return app, asgi, seen


async def test_async_view_past_the_timeout_is_cancelled_with_504(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    app, asgi, seen = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.3

    @app.get("/slow")
    async def slow_view() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("view cancelled")
            raise
        return "never"

    before = timeouts_now()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "flask_asgi"):
        sent = await call(asgi, "/slow")
    elapsed = time.monotonic() - started
    assert status_of(sent) == 504
    assert b"Gateway Timeout" in body_of(sent)
    assert 0.3 <= elapsed < 10
    assert seen[0] == "view cancelled"
    kind, path, error = seen[1]
    assert (kind, path) == ("teardown", "/slow")
    assert isinstance(error, asyncio.CancelledError) and "request timeout" in str(error)
    assert timeouts_now() - before == 1
    (warning,) = timeout_warnings(caplog)
    assert "GET /slow" in warning and "'slow_view'" in warning and "cancelled" in warning
    assert stats(app)["refused"]["request_timeout"] == timeouts_now()


async def test_a_fast_async_view_is_not_touched(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    app, asgi, seen = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 5

    @app.get("/quick")
    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "quick"

    before = timeouts_now()
    for _ in range(20):
        sent = await call(asgi, "/quick")
        assert (status_of(sent), body_of(sent)) == (200, b"quick")
    assert timeouts_now() == before
    assert all(error is None for _, _, error in seen)


def test_default_is_off() -> None:
    assert DEFAULTS["FLASK_ASGI_REQUEST_TIMEOUT"] == 0


async def test_per_view_timeouts_override_the_config(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    app, asgi, _ = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.3

    @app.get("/longer")
    @flask_asgi.timeout(10)
    async def longer() -> str:
        await asyncio.sleep(0.8)  # past the config's 0.3 s, within the view's 10 s
        return "longer"

    @flask_asgi.timeout(None)  # above @app.route works too: the mark is on the function
    @app.get("/unlimited")
    async def unlimited() -> str:
        await asyncio.sleep(0.8)
        return "unlimited"

    @app.get("/shorter")
    @flask_asgi.timeout(0.2)
    async def shorter() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.get("/default")
    async def default() -> str:
        await asyncio.sleep(30)
        return "never"

    before = timeouts_now()
    assert body_of(await call(asgi, "/longer")) == b"longer"
    assert body_of(await call(asgi, "/unlimited")) == b"unlimited"
    assert timeouts_now() == before
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 60  # the view's own mark is shorter
    started = time.monotonic()
    assert status_of(await call(asgi, "/shorter")) == 504
    assert time.monotonic() - started < 10
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.3  # read per request, as Flask's own
    assert status_of(await call(asgi, "/default")) == 504
    assert timeouts_now() - before == 2


async def test_a_mark_alone_without_config(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    app, asgi, _ = served  # FLASK_ASGI_REQUEST_TIMEOUT is 0: only marked views have one

    @app.get("/marked")
    @flask_asgi.timeout(0.2)
    async def marked() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.get("/plain")
    async def plain() -> str:
        await asyncio.sleep(0.5)
        return "plain"

    assert status_of(await call(asgi, "/marked")) == 504
    assert body_of(await call(asgi, "/plain")) == b"plain"


def login_style(view: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator written as Flask-Login's login_required is: a sync wrapper that calls the
    view through ensure_sync, with functools.wraps."""

    from flask import current_app

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return current_app.ensure_sync(view)(*args, **kwargs)

    return wrapper


async def test_marks_are_found_under_wraps_decorators_and_on_method_views(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    app, asgi, seen = served

    @app.get("/inner")
    @login_style
    @flask_asgi.timeout(0.2)
    async def inner() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.get("/outer")
    @flask_asgi.timeout(0.2)
    @login_style
    async def outer() -> str:
        await asyncio.sleep(30)
        return "never"

    class Items(MethodView):
        @flask_asgi.timeout(0.2)
        async def get(self) -> str:
            await asyncio.sleep(30)
            return "never"

        async def post(self) -> str:  # not marked: no timeout (the config is off)
            await asyncio.sleep(0.5)
            return "posted"

    @flask_asgi.timeout(0.2)
    class Whole(MethodView):
        async def get(self) -> str:
            await asyncio.sleep(30)
            return "never"

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    app.add_url_rule("/whole", view_func=Whole.as_view("whole"))
    before = timeouts_now()
    for path in ("/inner", "/outer", "/items", "/whole"):
        assert status_of(await call(asgi, path)) == 504, path
    assert body_of(await call(asgi, "/items", "POST")) == b"posted"
    assert timeouts_now() - before == 4
    cancelled = [p for kind, p, e in seen if isinstance(e, asyncio.CancelledError)]
    assert cancelled == ["/inner", "/outer", "/items", "/whole"]


async def test_a_real_flask_login_login_required_view(app: Flask) -> None:
    flask_login = pytest.importorskip("flask_login")
    manager = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        id = "ada"

    manager.request_loader(lambda req: User() if req.headers.get("host") else None)
    asgi = flask_asgi.ASGI(app)

    @app.get("/private")
    @flask_login.login_required
    @flask_asgi.timeout(0.2)
    async def private() -> str:
        await asyncio.sleep(30)
        return "never"

    assert status_of(await call(asgi, "/private")) == 504


def test_bad_timeouts_are_refused_clearly() -> None:
    for bad in (0, -1, "5", True, float("nan")):
        with pytest.raises(ValueError, match="positive number of seconds, or None"):
            flask_asgi.timeout(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates a view"):
        flask_asgi.timeout(1)(42)  # type: ignore[type-var]


async def test_sync_view_past_the_timeout_is_logged_once_and_answers(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    app, asgi, seen = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.2

    @app.get("/sync")
    def sync_view() -> str:
        time.sleep(1.0)  # five timeouts long: still one warning
        return "finished"

    @app.get("/sync-quick")
    def sync_quick() -> str:
        return "quick"

    before = timeouts_now()
    with caplog.at_level(logging.WARNING, "flask_asgi"):
        sent = await call(asgi, "/sync")
        assert (status_of(sent), body_of(sent)) == (200, b"finished")
        for _ in range(10):
            assert body_of(await call(asgi, "/sync-quick")) == b"quick"
    (warning,) = timeout_warnings(caplog)
    assert "GET /sync" in warning and "'sync_view'" in warning and "sync view" in warning
    assert "still running after 0.2 s" in warning or "still running after 0.3 s" in warning
    assert timeouts_now() - before == 1
    assert seen[0] == ("teardown", "/sync", None)


async def test_an_async_stream_past_the_timeout_is_cut_off(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """The response has started: no 504 can be sent, and a final empty message would
    make the cut stream look whole. The app returns with the response unfinished (the
    server closes the connection) and the generator's finally runs."""
    app, asgi, seen = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.5

    async def ticks() -> AsyncIterator[str]:
        try:
            for n in range(1000):
                yield f"{n}\n"
                await asyncio.sleep(0.05)
        finally:
            seen.append("generator closed")

    @app.get("/ticks")
    async def ticking() -> Any:
        return flask_asgi.stream(ticks())

    @app.get("/long-stream")
    @flask_asgi.timeout(None)
    async def long_stream() -> Any:
        async def few() -> AsyncIterator[str]:
            for n in range(20):  # 1 s in all: twice the config's timeout
                yield f"{n}\n"
                await asyncio.sleep(0.05)

        return flask_asgi.stream(few())

    before = timeouts_now()
    with caplog.at_level(logging.WARNING, "flask_asgi"):
        sent = await call(asgi, "/ticks")
    assert status_of(sent) == 200
    bodies = sent[1:]
    assert len(bodies) >= 2 and body_of(sent).startswith(b"0\n1\n")
    assert all(m["more_body"] for m in bodies)  # never finished: the connection is closed
    assert "generator closed" in seen
    assert timeouts_now() - before == 1
    assert len(timeout_warnings(caplog)) == 1
    whole = await call(asgi, "/long-stream")
    assert body_of(whole) == b"".join(f"{n}\n".encode() for n in range(20))
    assert whole[-1].get("more_body", False) is False
    assert timeouts_now() - before == 1


async def test_a_sync_stream_past_the_timeout_is_logged_and_finishes(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    app, asgi, _ = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.2

    @app.get("/sync-stream")
    def sync_stream() -> Any:
        def chunks() -> Iterator[str]:
            for n in range(10):
                time.sleep(0.06)
                yield f"{n}\n"

        return app.response_class(chunks())

    before = timeouts_now()
    with caplog.at_level(logging.WARNING, "flask_asgi"):
        sent = await call(asgi, "/sync-stream")
    assert body_of(sent) == b"".join(f"{n}\n".encode() for n in range(10))
    assert sent[-1].get("more_body", False) is False
    assert timeouts_now() - before == 1
    assert len(timeout_warnings(caplog)) == 1


async def test_a_view_that_answers_its_cancellation_is_sent(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    """A view may catch the CancelledError and answer anyway: its answer is sent, and no
    stray cancellation hits the rest of the request."""
    app, asgi, _ = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.2

    @app.get("/stubborn")
    async def stubborn() -> tuple[str, int]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # and it still may await
            return "partial results", 200
        return "never", 500

    sent = await call(asgi, "/stubborn")
    assert (status_of(sent), body_of(sent)) == (200, b"partial results")
    assert sent[-1].get("more_body", False) is False


def test_timeouts_on_a_real_server(app: Flask) -> None:
    """uvicorn: the client gets a 504 and can reuse the connection; a stream is cut off
    (the client sees an incomplete response, not a short one); Prometheus counts them."""
    pytest.importorskip("prometheus_client")
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.3
    app.config["FLASK_ASGI_METRICS_PATH"] = "/metrics"
    asgi = flask_asgi.ASGI(app)

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(30)
        return "never"

    @app.get("/ticks")
    async def ticks() -> Any:
        async def forever() -> AsyncIterator[str]:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.05)

        return flask_asgi.stream(forever())

    @app.get("/fine")
    async def fine() -> str:
        return "fine"

    before = timeouts_now()
    with run_live(asgi) as base, httpx.Client(base_url=base, timeout=20) as client:
        started = time.monotonic()
        response = client.get("/slow")
        assert response.status_code == 504
        assert time.monotonic() - started < 10
        assert client.get("/fine").text == "fine"
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("GET", "/ticks") as streamed:
                assert streamed.status_code == 200
                for chunk in streamed.iter_bytes():
                    received += chunk
        assert received.startswith(b"tick\n")
        assert client.get("/fine").text == "fine"  # a new connection
        metrics = client.get("/metrics").text
    assert timeouts_now() - before == 2
    line = next(
        m for m in metrics.splitlines() if m.startswith('flask_asgi_refused_total{reason="request')
    )
    assert float(line.rsplit(" ", 1)[1]) == timeouts_now()


async def test_504_closes_the_connection_when_the_body_was_left_unread(
    served: tuple[Flask, flask_asgi.ASGI, list[Any]],
) -> None:
    app, asgi, _ = served
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 0.2

    @app.route("/ignore-body", methods=["GET", "POST"])
    async def ignore_body() -> str:
        await asyncio.sleep(30)
        return "never"

    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}
        await asyncio.sleep(3600)  # the rest of the body never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"test"), (b"content-length", b"1000")]
    await asgi(http_scope("/ignore-body", "POST", headers), receive, send)
    assert status_of(sent) == 504
    assert (b"connection", b"close") in sent[0]["headers"]
    answered = await call(asgi, "/ignore-body")  # no body left: keep-alive is fine
    assert status_of(answered) == 504
    assert (b"connection", b"close") not in answered[0]["headers"]
