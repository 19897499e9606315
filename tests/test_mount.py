"""``asgi.mount(prefix, app)``: other ASGI apps beside Flask, their routing and lifespans."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from flask import Flask, request, url_for
from helpers import http_scope, run_live
from websockets.asyncio.client import connect

import flask_asgi


class Recorder:
    """A raw ASGI app: answers HTTP with the scope it got, echoes WebSocket messages, and
    records its lifespan in ``events`` (``lifespan``: "speak", "raise", "return", "hang",
    "fail")."""

    def __init__(self, name: str, events: list[str] | None = None, lifespan: str = "speak"):
        self.name = name
        self.events = events if events is not None else []
        self.lifespan = lifespan

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.run_lifespan(scope, receive, send)
        elif scope["type"] == "http":
            body = json.dumps(
                {"app": self.name, "path": scope["path"], "root_path": scope["root_path"]}
            ).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] == "websocket.receive":
                text = f"{self.name}:{scope['root_path']}:{message.get('text')}"
                await send({"type": "websocket.send", "text": text})

    async def run_lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.lifespan == "raise":
            raise ValueError("no lifespan here")
        if self.lifespan == "return":
            return
        assert (await receive())["type"] == "lifespan.startup"
        if self.lifespan == "hang":
            await asyncio.Event().wait()
        if self.lifespan == "fail":
            await send({"type": "lifespan.startup.failed", "message": f"{self.name} broke"})
            return
        self.events.append(f"{self.name}:startup")
        scope["state"][self.name] = "up"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        self.events.append(f"{self.name}:shutdown")
        if self.lifespan == "fail-shutdown":
            await send({"type": "lifespan.shutdown.failed", "message": f"{self.name} stuck"})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def call(asgi: Any, path: str, root_path: str = "") -> tuple[int, bytes]:
    scope = http_scope(root_path + path)
    scope["root_path"] = root_path
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def mounted(app: Flask, asgi: flask_asgi.ASGI) -> flask_asgi.ASGI:
    @app.get("/")
    def index() -> str:
        return "flask index"

    @app.get("/api-docs")
    def api_docs() -> str:
        return f"flask {request.path}"

    asgi.mount("/api", Recorder("api"))
    asgi.mount("/api/v2/", Recorder("v2"))  # a trailing slash is dropped
    return asgi


# -- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/items", {"app": "api", "path": "/api/items", "root_path": "/api"}),
        ("/api", {"app": "api", "path": "/api", "root_path": "/api"}),  # the prefix itself
        ("/api/", {"app": "api", "path": "/api/", "root_path": "/api"}),
        ("/api/v2", {"app": "v2", "path": "/api/v2", "root_path": "/api/v2"}),  # longest wins
        ("/api/v2/x/y", {"app": "v2", "path": "/api/v2/x/y", "root_path": "/api/v2"}),
        ("/api/v20", {"app": "api", "path": "/api/v20", "root_path": "/api"}),
    ],
)
async def test_paths_under_a_prefix_go_to_its_app(
    mounted: flask_asgi.ASGI, path: str, expected: dict[str, str]
) -> None:
    status, body = await call(mounted, path)
    assert (status, json.loads(body)) == (200, expected)


async def test_other_paths_stay_with_flask(mounted: flask_asgi.ASGI) -> None:
    assert await call(mounted, "/") == (200, b"flask index")
    assert await call(mounted, "/api-docs") == (200, b"flask /api-docs")  # not under /api
    assert (await call(mounted, "/nowhere"))[0] == 404


async def test_the_servers_root_path_is_kept(mounted: flask_asgi.ASGI) -> None:
    status, body = await call(mounted, "/api/v2/x", root_path="/site")
    assert json.loads(body) == {"app": "v2", "path": "/site/api/v2/x", "root_path": "/site/api/v2"}
    assert await call(mounted, "/api-docs", root_path="/site") == (200, b"flask /api-docs")


def test_flasks_test_client_reaches_mounted_apps(app: Flask, mounted: flask_asgi.ASGI) -> None:
    client = app.test_client()
    expected = {"app": "v2", "path": "/api/v2/z", "root_path": "/api/v2"}
    assert client.get("/api/v2/z").json == expected
    assert client.get("/").text == "flask index"
    with client.websocket("/api/ws") as ws:
        ws.send("hi")
        assert ws.receive() == "api:/api:hi"


async def test_the_async_test_client_reaches_mounted_apps(mounted: flask_asgi.ASGI) -> None:
    async with mounted.test_client() as client:
        assert (await client.get("/api/q")).json["app"] == "api"
        assert (await client.get("/")).text == "flask index"
        async with client.websocket("/api/v2/ws") as ws:
            await ws.send("yo")
            assert await ws.receive() == "v2:/api/v2:yo"


async def test_http_and_websocket_on_uvicorn(app: Flask, mounted: flask_asgi.ASGI) -> None:
    with run_live(mounted) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/")).text == "flask index"
            assert (await http.get("/api/v2/a")).json()["app"] == "v2"
        async with connect(base.replace("http", "ws") + "/api/v2/ws") as ws:
            await ws.send("one")
            assert await ws.recv() == "v2:/api/v2:one"


def test_mounts_outlive_the_asgi_object(app: Flask) -> None:
    flask_asgi.ASGI(app).mount("/other", Recorder("other"))  # the object is dropped at once
    gc.collect()
    assert app.test_client().get("/other/x").json["app"] == "other"


def test_bad_mounts_are_refused(asgi: flask_asgi.ASGI) -> None:
    for prefix in ("api", "/", "", "//"):
        with pytest.raises(ValueError, match="mount prefix"):
            asgi.mount(prefix, Recorder("x"))
    with pytest.raises(TypeError, match="needs an ASGI app"):
        asgi.mount("/x", "not an app")
    asgi.mount("/x", Recorder("x"))
    with pytest.raises(ValueError, match="already mounted at '/x'"):
        asgi.mount("/x/", Recorder("y"))
    assert len(asgi.state.mounts) == 1


# -- lifespan ------------------------------------------------------------------------------


def lifespan_app(app: Flask, asgi: flask_asgi.ASGI, events: list[str]) -> None:
    @asgi.before_serving
    def before() -> None:
        events.append("flask:before_serving")

    @asgi.while_serving
    async def around() -> Any:
        events.append("flask:while_serving:start")
        yield
        events.append("flask:while_serving:stop")

    @asgi.after_serving
    def after() -> None:
        events.append("flask:after_serving")


def test_lifespan_order(app: Flask, asgi: flask_asgi.ASGI) -> None:
    events: list[str] = []
    lifespan_app(app, asgi, events)
    asgi.mount("/b", Recorder("b", events))
    asgi.mount("/a", Recorder("a", events))
    with asgi.serving():
        events.append("serving")
    assert events == [
        "flask:before_serving",
        "flask:while_serving:start",
        "b:startup",  # mount order, once flask-asgi's hooks have opened their resources
        "a:startup",
        "serving",
        "a:shutdown",  # reverse order, before the hooks close them
        "b:shutdown",
        "flask:while_serving:stop",
        "flask:after_serving",
    ]


def test_lifespan_on_uvicorn_shares_the_servers_state(app: Flask, asgi: flask_asgi.ASGI) -> None:
    events: list[str] = []
    lifespan_app(app, asgi, events)

    async def show_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await Recorder("state", events).run_lifespan(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(scope["state"]).encode()})

    asgi.mount("/state", show_state)
    with run_live(asgi) as base:
        assert events[-1] == "state:startup"
        assert httpx.get(base + "/state").json() == {"state": "up"}
    assert events[-3:] == ["state:shutdown", "flask:while_serving:stop", "flask:after_serving"]


def test_failed_startup_fails_the_server_with_its_message(
    app: Flask, asgi: flask_asgi.ASGI, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    asgi.mount("/first", Recorder("first", events))
    asgi.mount("/broken", Recorder("broken", events, lifespan="fail"))
    with pytest.raises(RuntimeError, match="mounted at '/broken' failed startup: broken broke"):
        with asgi.serving():
            pass
    assert events == ["first:startup", "first:shutdown"]  # the started one is stopped again
    events.clear()
    with pytest.raises(RuntimeError, match="exited before it started"):
        with run_live(asgi):
            pass
    assert events == ["first:startup", "first:shutdown"]
    assert "broken broke" in caplog.text


def test_failed_shutdown_is_reported_and_the_others_still_stop(
    app: Flask, asgi: flask_asgi.ASGI
) -> None:
    events: list[str] = []
    lifespan_app(app, asgi, events)
    asgi.mount("/first", Recorder("first", events))
    asgi.mount("/stuck", Recorder("stuck", events, lifespan="fail-shutdown"))
    with pytest.raises(RuntimeError, match="mounted at '/stuck' failed shutdown: stuck stuck"):
        with asgi.serving():
            pass
    assert events[-4:] == [
        "stuck:shutdown",
        "first:shutdown",  # still stopped
        "flask:while_serving:stop",  # and flask-asgi's hooks still ran
        "flask:after_serving",
    ]


@pytest.mark.parametrize("kind", ["raise", "return", "hang"])
def test_apps_that_do_not_speak_lifespan_are_tolerated(
    app: Flask, asgi: flask_asgi.ASGI, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["FLASK_ASGI_MOUNT_LIFESPAN_TIMEOUT"] = 0.3
    events: list[str] = []
    asgi.mount("/mute", Recorder("mute", lifespan=kind))
    asgi.mount("/talks", Recorder("talks", events))
    caplog.set_level(logging.INFO, "flask_asgi")
    with asgi.serving():
        assert app.test_client().get("/mute/x").json["app"] == "mute"
    assert events == ["talks:startup", "talks:shutdown"]
    expected = "no answer to lifespan.startup in 0.3s" if kind == "hang" else "does not speak"
    assert expected in caplog.text


# -- a Starlette app at /api/v2 ------------------------------------------------------------


def starlette_app(events: list[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute

    async def item(request: Any) -> JSONResponse:
        return JSONResponse(
            {
                "item": request.path_params["item"],
                "self": str(request.url_for("item", item=request.path_params["item"])),
                "path": request.url.path,
                "root_path": request.scope["root_path"],
                "db": request.app.state.db,
            }
        )

    async def echo(socket: Any) -> None:
        await socket.accept()
        text = await socket.receive_text()
        await socket.send_text(f"starlette {socket.url_for('echo')}: {text}")
        await socket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("starlette:startup")
        app.state.db = "open"
        yield
        events.append("starlette:shutdown")

    routes = [
        Route("/items/{item:int}", item, name="item"),
        WebSocketRoute("/ws", echo, name="echo"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def flask_with_starlette(app: Flask, asgi: flask_asgi.ASGI) -> list[str]:
    events: list[str] = []

    @asgi.before_serving
    def before() -> None:
        events.append("flask:before_serving")

    @asgi.after_serving
    def after() -> None:
        events.append("flask:after_serving")

    @app.get("/")
    def index() -> dict[str, str]:
        return {
            "self": url_for("index", _external=True),
            "items": url_for("items", _external=True),
            "starlette_item": request.host_url.rstrip("/")
            + request.script_root
            + "/api/v2/items/1",
        }

    @app.get("/items")
    def items() -> str:
        return "flask items"

    asgi.mount("/api/v2", starlette_app(events))
    return events


@pytest.mark.parametrize("root_path", ["", "/site"])
async def test_starlette_at_api_v2_on_uvicorn(
    app: Flask, asgi: flask_asgi.ASGI, root_path: str
) -> None:
    events = flask_with_starlette(app, asgi)
    with run_live(asgi, root_path=root_path) as base:
        assert events == ["flask:before_serving", "starlette:startup"]
        async with httpx.AsyncClient(base_url=base) as http:
            got = (await http.get("/api/v2/items/3")).json()
            assert got == {
                "item": 3,
                "self": f"{base}{root_path}/api/v2/items/3",  # Starlette's url_for
                "path": f"{root_path}/api/v2/items/3",
                "root_path": f"{root_path}/api/v2",
                "db": "open",  # set by the Starlette app's own lifespan
            }
            assert (await http.get("/api/v2/items/x")).status_code == 404  # Starlette's 404
            assert (await http.get("/api/v2/items/x")).text == "Not Found"
            links = (await http.get("/")).json()  # Flask's url_for
            assert links == {
                "self": f"{base}{root_path}/",
                "items": f"{base}{root_path}/items",
                "starlette_item": f"{base}{root_path}/api/v2/items/1",
            }
            assert (await http.get(links["starlette_item"].removeprefix(base + root_path))).json()[
                "item"
            ] == 1
            assert (await http.get("/items")).text == "flask items"
        async with connect(base.replace("http", "ws") + "/api/v2/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == f"starlette ws://{base[7:]}{root_path}/api/v2/ws: hi"
    assert events[-2:] == ["starlette:shutdown", "flask:after_serving"]


def test_starlette_through_flasks_test_client(app: Flask, asgi: flask_asgi.ASGI) -> None:
    events = flask_with_starlette(app, asgi)
    with asgi.serving():
        client = app.test_client()
        assert client.get("/api/v2/items/5").json["self"] == "http://localhost/api/v2/items/5"
        assert client.get("/items").text == "flask items"
        with client.websocket("/api/v2/ws") as ws:
            ws.send("yo")
            assert ws.receive() == "starlette ws://localhost/api/v2/ws: yo"
    assert events == [
        "flask:before_serving",
        "starlette:startup",
        "starlette:shutdown",
        "flask:after_serving",
    ]


def test_a_subclass_of_asgi_keeps_its_methods(app: Flask) -> None:
    class Custom(flask_asgi.ASGI):
        def extra(self) -> str:
            return "kept"

    custom = Custom(app)
    custom.mount("/x", Recorder("x"))
    assert isinstance(custom, Custom) and custom.extra() == "kept"
    assert app.test_client().get("/x/y").json["app"] == "x"
    assert type(flask_asgi.ASGI(Flask("plain"))).__call__ is flask_asgi.ASGI.__call__
