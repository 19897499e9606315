"""Server-sent events: encoding, keep-alive comments, request context, disconnects, uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, current_app, g, request
from helpers import wait_async, wait_for

import flask_asgi
from flask_asgi import ServerSentEvent, event_stream
from flask_asgi.features.sse import EventStream, encode_event


def parse_events(text: str) -> list[dict[str, Any]]:
    """A client-side parser following the HTML spec's event-stream interpretation."""
    events: list[dict[str, Any]] = []
    data: list[str] = []
    fields: dict[str, Any] = {}
    comments: list[str] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in lines:
        if line == "":
            if data or fields or comments:
                event = dict(fields)
                if data:
                    event["data"] = "\n".join(data)
                if comments:
                    event["comments"] = comments
                events.append(event)
            data, fields, comments = [], {}, []
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            comments.append(value)
        elif name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


# -- encoding -------------------------------------------------------------------------------


def test_event_fields_and_multiline_data() -> None:
    event = ServerSentEvent(data="one\ntwo\r\nthree\rfour", event="update", id=7, retry=2500)
    wire = event.encode()
    assert wire == (
        b"event: update\nid: 7\nretry: 2500\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    )
    assert parse_events(wire.decode()) == [
        {"event": "update", "id": "7", "retry": "2500", "data": "one\ntwo\nthree\nfour"}
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("", ""),  # an empty data line: the browser still dispatches the event
        ("trailing\n", "trailing\n"),
        ("\n\nblank lines\n\n", "\n\nblank lines\n\n"),
        (" leading space", " leading space"),
        ("data: looks like a field", "data: looks like a field"),
        ("unicode ✓ é", "unicode ✓ é"),
    ],
)
def test_data_round_trips(data: str, expected: str) -> None:
    assert parse_events(encode_event(data).decode("utf-8")) == [{"data": expected}]


def test_plain_values_become_json() -> None:
    assert encode_event({"a": [1, 2]}) == b'data: {"a": [1, 2]}\n\n'
    assert encode_event([1, "x"]) == b'data: [1, "x"]\n\n'
    assert encode_event(3) == b"data: 3\n\n"
    assert encode_event(ServerSentEvent(data={"b": None})) == b'data: {"b": null}\n\n'


def test_json_uses_the_apps_provider(app: Flask) -> None:
    with app.app_context():
        wire = encode_event({"when": datetime.date(2024, 5, 1)})  # json.dumps would refuse
    assert wire == b'data: {"when": "Wed, 01 May 2024 00:00:00 GMT"}\n\n'


def test_comment_and_no_data() -> None:
    assert ServerSentEvent(comment="hello\nworld").encode() == b": hello\n: world\n\n"
    assert ServerSentEvent(retry=100).encode() == b"retry: 100\n\n"
    assert ServerSentEvent().encode() == b":\n\n"


@pytest.mark.parametrize(
    "event",
    [
        ServerSentEvent(data="x", event="two\nlines"),
        ServerSentEvent(data="x", id="a\rb"),
        ServerSentEvent(data="x", id="nul\0"),
        ServerSentEvent(data="x", retry=-1),
        ServerSentEvent(data="x", retry="10"),  # type: ignore[arg-type]
    ],
)
def test_invalid_fields_are_refused(event: ServerSentEvent) -> None:
    with pytest.raises(ValueError):
        event.encode()


# -- through the test clients --------------------------------------------------------------


def sse_app() -> tuple[Flask, flask_asgi.ASGI, dict[str, Any]]:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)
    state: dict[str, Any] = {"log": [], "gate": threading.Event()}
    log: list[str] = state["log"]

    @app.get("/feed")
    async def feed() -> Any:
        g.user = "ann"
        start = int(flask_asgi.last_event_id() or 0)

        async def events() -> AsyncIterator[Any]:
            for n in range(start + 1, start + 4):
                yield ServerSentEvent(data=f"{request.args['who']} {n}\nline 2", id=n)
            yield {"user": g.user, "path": request.path}
            yield "done"

        return event_stream(events(), keepalive=None, headers={"X-Feed": "1"})

    @app.get("/idle")
    async def idle() -> Any:
        async def events() -> AsyncIterator[str]:
            yield "first"
            await asyncio.sleep(0.5)  # idle: keep-alive comments meanwhile
            yield "second"

        return event_stream(events(), keepalive=float(request.args.get("keepalive", "0.05")))

    @app.get("/endless")
    async def endless() -> Any:
        async def events() -> AsyncIterator[str]:
            try:
                yield "first"
                await asyncio.sleep(60)
                yield "never"
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            finally:
                log.append("finally")

        return event_stream(events(), keepalive=60)

    @app.get("/endless-sync-view")
    def endless_sync_view() -> Any:
        async def events() -> AsyncIterator[str]:
            try:
                yield "first"
                await asyncio.sleep(60)
                yield "never"
            finally:
                log.append("sync-view:finally")

        return event_stream(events(), keepalive=0.1)

    @app.get("/gated")
    async def gated() -> Any:
        async def events() -> AsyncIterator[str]:
            yield "first"
            yield "second" if await wait_async(state["gate"]) else "TIMEOUT"

        return event_stream(events(), keepalive=None)

    return app, asgi, state


def test_event_stream_response() -> None:
    app, asgi, _ = sse_app()
    response = app.test_client().get("/feed?who=bob", headers={"Last-Event-ID": "10"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Feed"] == "1"
    assert "Content-Length" not in response.headers
    assert parse_events(response.text) == [
        {"id": "11", "data": "bob 11\nline 2"},
        {"id": "12", "data": "bob 12\nline 2"},
        {"id": "13", "data": "bob 13\nline 2"},
        {"data": '{"path": "/feed", "user": "ann"}'},  # request context and g in the generator
        {"data": "done"},
    ]


def test_keepalive_comments_while_idle() -> None:
    app, _, _ = sse_app()
    body = app.test_client().get("/idle").text
    assert body.startswith("data: first\n\n: keep-alive\n\n")
    assert body.endswith(": keep-alive\n\ndata: second\n\n")
    events = parse_events(body)
    assert events[0] == {"data": "first"} and events[-1] == {"data": "second"}
    assert all(e == {"comments": ["keep-alive"]} for e in events[1:-1])

    body = app.test_client().get("/idle?keepalive=0").text  # 0: never
    assert body == "data: first\n\ndata: second\n\n"


async def test_async_test_client() -> None:
    app, asgi, _ = sse_app()
    async with asgi.test_client() as client:
        response = await client.get("/feed?who=amy")
        idle = await client.get("/idle")
    assert [e.get("id") for e in parse_events(response.text)] == ["1", "2", "3", None, None]
    assert ": keep-alive" in idle.text


@pytest.mark.parametrize("keepalive", [0.01, None])
@pytest.mark.parametrize("view_kind", ["async", "sync"])
def test_generator_steps_share_one_context(
    app: Flask, asgi: flask_asgi.ASGI, keepalive: float | None, view_kind: str
) -> None:
    """Each step of the source runs in the same contextvars Context, for async and sync
    views alike: a context manager kept open across yields (which resets its ContextVar
    token at the end, and fails in another Context) works, and the request stays there."""
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker")

    @contextlib.contextmanager
    def marked() -> Iterator[None]:
        token = marker.set("marked")
        try:
            yield
        finally:
            marker.reset(token)  # ValueError if this step runs in another Context
            current_app.config["RESET"] = True

    def sync_helper() -> str:  # sync code the generator calls may use await_
        return flask_asgi.await_(asyncio.sleep(0, result="awaited"))

    async def events() -> AsyncIterator[str]:
        with marked():
            for n in range(3):
                await asyncio.sleep(0.05)  # longer than keepalive: a keep-alive each time
                yield f"{n} {sync_helper()} {request.path} {marker.get()}"

    async def async_view() -> Any:
        return event_stream(events(), keepalive=keepalive)

    def sync_view() -> Any:
        return event_stream(events(), keepalive=keepalive)

    app.add_url_rule("/ctx", view_func=async_view if view_kind == "async" else sync_view)
    response = app.test_client().get("/ctx")
    assert [e.get("data") for e in parse_events(response.text) if "data" in e] == [
        "0 awaited /ctx marked",
        "1 awaited /ctx marked",
        "2 awaited /ctx marked",
    ]
    assert app.config["RESET"] is True
    assert (": keep-alive" in response.text) is (keepalive is not None)


def test_generator_error_ends_the_stream(app: Flask, asgi: flask_asgi.ASGI) -> None:
    @app.get("/broken")
    async def broken() -> Any:
        async def events() -> AsyncIterator[str]:
            yield "ok"
            await asyncio.sleep(0.05)
            raise RuntimeError("generator failed")

        return event_stream(events(), keepalive=0.01)

    response = app.test_client().get("/broken", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"data: ok\n\n"
    with pytest.raises(RuntimeError, match="generator failed"):
        for _ in chunks:
            pass
    with contextlib.suppress(RuntimeError):  # the test client re-raises it on close too
        response.close()


def test_test_client_disconnect_cancels_the_generator() -> None:
    app, _, state = sse_app()
    response = app.test_client().get("/endless", buffered=False)
    assert next(iter(response.response)) == b"data: first\n\n"
    response.close()
    assert wait_for(lambda: state["log"] == ["cancelled", "finally"]), state["log"]


def test_event_stream_class_builds_custom_responses(app: Flask, asgi: flask_asgi.ASGI) -> None:
    from flask import Response

    @app.get("/custom")
    async def custom() -> Response:
        async def events() -> AsyncIterator[str]:
            yield "x"

        body = flask_asgi.stream(EventStream(events()))
        return Response(body, mimetype="text/event-stream", status=201)

    response = app.test_client().get("/custom")
    assert response.status_code == 201 and response.text == "data: x\n\n"
    with pytest.raises(ValueError):
        EventStream(iter_nothing(), keepalive=-1)


async def iter_nothing() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover


# -- through uvicorn -----------------------------------------------------------------------


def test_events_arrive_one_by_one(live_server: Any) -> None:
    _, asgi, state = sse_app()
    base = live_server(asgi, timeout_graceful_shutdown=2)
    with httpx.stream("GET", base + "/gated", timeout=30) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        lines = response.iter_lines()
        assert next(lines) == "data: first"  # before the generator may produce "second"
        state["gate"].set()
        rest = list(lines)
    assert rest == ["", "data: second", ""]


def test_client_disconnect_cancels_generator_promptly(live_server: Any) -> None:
    _, asgi, state = sse_app()
    base = live_server(asgi, timeout_graceful_shutdown=2)
    with httpx.stream("GET", base + "/endless", timeout=30) as response:
        assert next(response.iter_lines()) == "data: first"
    # The generator is idle in a 60 s sleep, with a 60 s keep-alive: only the disconnect
    # watcher cancelling the request task can end it this soon.
    assert wait_for(lambda: state["log"] == ["cancelled", "finally"]), state["log"]


def test_sync_view_stream_stops_at_next_keepalive(live_server: Any) -> None:
    _, asgi, state = sse_app()
    base = live_server(asgi, timeout_graceful_shutdown=2)
    with httpx.stream("GET", base + "/endless-sync-view", timeout=30) as response:
        assert next(response.iter_lines()) == "data: first"
    assert wait_for(lambda: "sync-view:finally" in state["log"]), state["log"]


def test_stream_outlives_uvicorn_keep_alive_timeout(app: Flask, asgi: flask_asgi.ASGI) -> None:
    from helpers import run_live

    @app.get("/long")
    async def long() -> Any:
        async def events() -> AsyncIterator[str]:
            yield "start"
            await asyncio.sleep(2.5)  # silent but for keep-alive comments
            yield "end"

        return event_stream(events(), keepalive=0.5)

    with run_live(asgi, timeout_keep_alive=1, timeout_graceful_shutdown=2) as base:
        with httpx.stream("GET", base + "/long", timeout=30) as response:
            body = "".join(response.iter_text())
    events = parse_events(body)
    assert events[0] == {"data": "start"} and events[-1] == {"data": "end"}
    assert {"comments": ["keep-alive"]} in events


def test_sync_iterables_are_refused() -> None:
    def sync_events() -> Iterator[str]:
        yield "x"

    with pytest.raises(TypeError, match="async iterable"):
        event_stream(sync_events())  # type: ignore[arg-type]


# -- examples/clock_sse.py, served by flask serve -------------------------------------------


def read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """Read events from a streaming response until ``count`` have been parsed."""
    text = ""
    for chunk in response.iter_text():
        text += chunk
        events = parse_events(text.rpartition("\n\n")[0] + "\n\n")
        if len(events) >= count:
            return events
    return parse_events(text)


def test_clock_example(cli_server: Any) -> None:
    server = cli_server("examples/clock_sse.py")
    page = httpx.get(server.base_url + "/", timeout=10).text
    assert 'new EventSource("/clock")' in page and "<script src" not in page  # no CDN

    headers = {"Last-Event-ID": "41"}
    url = server.base_url + "/clock?interval=0.05"
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response, 3)
    assert events[0] == {"retry": "3000", "comments": ["clock"]}
    assert [(e["event"], e["id"]) for e in events[1:3]] == [("tick", "42"), ("tick", "43")]
    assert time.strptime(json.loads(events[1]["data"])["time"], "%H:%M:%S")

    job = httpx.post(server.base_url + "/jobs?steps=4", timeout=10)
    assert job.status_code == 202
    with httpx.stream("GET", server.base_url + job.json()["progress_url"], timeout=10) as feed:
        events = parse_events("".join(feed.iter_text()))  # the stream ends after "done"
    progress = [int(e["data"]) for e in events if e.get("event") == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100
    assert events[-1] == {"event": "done", "data": "ok"}
    assert httpx.get(server.base_url + "/jobs/999/progress", timeout=10).status_code == 404
