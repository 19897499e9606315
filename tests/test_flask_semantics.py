"""Flask's own behaviour, unchanged, with every request going through the ASGI path."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import (
    Blueprint,
    Flask,
    abort,
    g,
    got_request_exception,
    jsonify,
    make_response,
    redirect,
    request,
    request_started,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from flask.views import MethodView
from helpers import REDIRECT
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

import flask_asgi


def test_test_client_goes_through_asgi(app: Flask, client: Any) -> None:
    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "asgi": "asgi.scope" in request.environ,
            "thread": threading.current_thread().name,
        }

    assert client.get("/").json == {"asgi": True, "thread": "flask-asgi-loop"}


@pytest.mark.parametrize("hooks_async", [False, True], ids=["sync-hooks", "async-hooks"])
def test_request_hooks_and_teardown(app: Flask, client: Any, hooks_async: bool) -> None:
    calls: list[Any] = []

    def hook(name: str, returns_arg: bool = False) -> Any:
        if hooks_async:

            async def fn(arg: Any = None) -> Any:
                await asyncio.sleep(0)
                calls.append((name, arg if name.startswith("teardown") else None))
                return arg if returns_arg else None

        else:

            def fn(arg: Any = None) -> Any:
                calls.append((name, arg if name.startswith("teardown") else None))
                return arg if returns_arg else None

        fn.__name__ = name
        return fn

    app.before_request(hook("before"))
    app.after_request(hook("after", returns_arg=True))
    app.teardown_request(hook("teardown_request"))
    app.teardown_appcontext(hook("teardown_appcontext"))

    @app.before_request
    async def set_g() -> None:
        g.user = "alice"

    @app.get("/")
    async def index() -> str:
        calls.append(("view", None))
        return g.user

    @app.get("/boom")
    async def boom() -> str:
        raise KeyError("x")

    response = client.get("/")
    assert response.text == "alice"
    assert calls == [
        ("before", None),
        ("view", None),
        ("after", None),
        ("teardown_request", None),
        ("teardown_appcontext", None),
    ]

    calls.clear()
    app.config["TESTING"] = False  # no propagation: Flask answers 500 and tears down
    assert client.get("/boom").status_code == 500
    assert [c[0] for c in calls] == ["before", "after", "teardown_request", "teardown_appcontext"]
    assert isinstance(calls[2][1], KeyError)
    assert isinstance(calls[3][1], KeyError)


def test_error_handlers(app: Flask, client: Any) -> None:
    class PaymentRequired(Exception):
        pass

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return jsonify(code=error.code, name=error.name), error.code

    @app.errorhandler(PaymentRequired)
    async def payment(error: PaymentRequired) -> Any:
        await asyncio.sleep(0)
        return {"pay": str(error)}, 402

    @app.get("/teapot")
    async def teapot() -> str:
        abort(418)

    @app.get("/pay")
    async def pay() -> str:
        await asyncio.sleep(0)
        raise PaymentRequired("5 EUR")

    @app.get("/sync-pay")
    def sync_pay() -> str:
        raise PaymentRequired("3 EUR")

    response = client.get("/teapot")
    assert response.status_code == 418
    assert response.json == {"code": 418, "name": "I'm a teapot"}
    assert client.get("/missing").json == {"code": 404, "name": "Not Found"}
    response = client.get("/pay")
    assert (response.status_code, response.json) == (402, {"pay": "5 EUR"})
    response = client.get("/sync-pay")  # async handler for an error from a worker thread
    assert (response.status_code, response.json) == (402, {"pay": "3 EUR"})


def test_redirects(app: Flask, client: Any) -> None:
    @app.get("/old")
    async def old() -> Any:
        return redirect(url_for("new", q="1"))

    @app.get("/new")
    async def new() -> str:
        return "new " + request.args["q"]

    response = client.get("/old")
    assert response.status_code == REDIRECT
    assert response.headers["Location"] == "/new?q=1"
    response = client.get("/old", follow_redirects=True)
    assert response.text == "new 1"
    assert [r.status_code for r in response.history] == [REDIRECT]


def test_sessions_and_multiple_cookies(app: Flask, client: Any) -> None:
    app.secret_key = "test-secret"

    @app.post("/login")
    async def login() -> Any:
        session["user"] = request.args["name"]
        response = make_response("logged in")
        response.set_cookie("theme", "dark")
        response.set_cookie("lang", "fr", httponly=True)
        return response

    @app.get("/me")
    async def me() -> dict[str, Any]:
        session["visits"] = session.get("visits", 0) + 1
        return {
            "user": session.get("user"),
            "theme": request.cookies.get("theme"),
            "lang": request.cookies.get("lang"),
        }

    response = client.post("/login?name=bob")
    set_cookies = response.headers.getlist("Set-Cookie")
    assert len(set_cookies) == 3  # session + theme + lang, as separate headers
    assert {c.split("=")[0] for c in set_cookies} == {"session", "theme", "lang"}
    assert client.get_cookie("lang").http_only
    assert client.get("/me").json == {"user": "bob", "theme": "dark", "lang": "fr"}

    with client.session_transaction() as sess:
        assert sess["visits"] == 1
        sess["user"] = "carol"
    assert client.get("/me").json["user"] == "carol"
    with client.session_transaction() as sess:
        assert sess["visits"] == 2


def test_blueprint_with_async_views_and_url_value_preprocessor(app: Flask, client: Any) -> None:
    bp = Blueprint("shop", __name__, url_prefix="/<lang>/shop")

    @bp.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, Any] | None) -> None:
        assert values is not None
        g.lang = values.pop("lang")

    @bp.url_defaults
    def add_lang(endpoint: str, values: dict[str, Any]) -> None:
        values.setdefault("lang", g.lang)

    @bp.before_request
    async def bp_before() -> None:
        g.bp_hook = True

    @bp.get("/item/<int:item_id>")
    async def item(item_id: int) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {
            "lang": g.lang,
            "id": item_id,
            "hook": g.bp_hook,
            "self": url_for("shop.item", item_id=item_id),
        }

    app.register_blueprint(bp)
    assert client.get("/de/shop/item/7").json == {
        "lang": "de",
        "id": 7,
        "hook": True,
        "self": "/de/shop/item/7",
    }


def test_method_view_async_and_mixed(app: Flask, client: Any) -> None:
    class Items(MethodView):
        async def get(self) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"method": "get", "thread": threading.current_thread().name}

        def post(self) -> dict[str, Any]:
            return {"method": "post", "thread": threading.current_thread().name}

    class AllAsync(MethodView):
        async def get(self) -> str:
            return "all-async get"

        async def delete(self) -> tuple[str, int]:
            return "", 204

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    app.add_url_rule("/all", view_func=AllAsync.as_view("all"))

    response = client.get("/items")
    assert response.json == {"method": "get", "thread": "flask-asgi-loop"}
    response = client.post("/items")
    assert response.json["method"] == "post"
    assert response.json["thread"].startswith("flask-asgi-worker")
    response = client.head("/items")
    assert response.status_code == 200 and response.data == b""
    assert client.get("/all").text == "all-async get"
    assert client.delete("/all").status_code == 204
    assert client.put("/all").status_code == 405


@pytest.mark.parametrize("view_async", [False, True], ids=["sync-view", "async-view"])
def test_stream_with_context(app: Flask, client: Any, view_async: bool) -> None:
    def generate() -> Any:
        yield "name="
        yield request.args["name"]  # needs the request context while streaming
        yield "!"

    if view_async:

        @app.get("/stream")
        async def stream_async() -> Any:
            return stream_with_context(generate())

    else:

        @app.get("/stream")
        def stream_sync() -> Any:
            return stream_with_context(generate())

    response = client.get("/stream?name=ada")
    assert response.status_code == 200
    assert response.text == "name=ada!"
    assert "Content-Length" not in response.headers


def test_send_file_large(app: Flask, client: Any, tmp_path: Path) -> None:
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB, well over the response buffer
    path = tmp_path / "big.bin"
    path.write_bytes(payload)

    @app.get("/file")
    async def file() -> Any:
        return send_file(path, mimetype="application/octet-stream")

    @app.get("/sync-file")
    def sync_file() -> Any:
        return send_file(path, mimetype="application/octet-stream")

    for url in ("/file", "/sync-file"):
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(payload))
        assert response.data == payload
    response = client.get("/file", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.data == payload[10:20]


def test_jsonify_make_response_head_options(app: Flask, client: Any) -> None:
    @app.route("/thing", methods=["GET", "POST"])
    async def thing() -> Any:
        response = make_response(jsonify(items=[1, 2]), 201)
        response.headers["X-Custom"] = request.method
        return response

    response = client.get("/thing")
    assert response.status_code == 201
    assert response.json == {"items": [1, 2]}
    assert response.headers["X-Custom"] == "GET"
    assert response.mimetype == "application/json"

    head = client.head("/thing")
    assert head.status_code == 201
    assert head.data == b""
    assert head.headers["X-Custom"] == "HEAD"
    assert head.headers["Content-Length"] == response.headers["Content-Length"]

    options = client.options("/thing")
    assert options.status_code == 200
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


def test_signals(app: Flask, client: Any) -> None:
    app.config["TESTING"] = False
    started: list[str] = []
    errors: list[BaseException] = []

    @app.get("/ok")
    async def ok() -> str:
        return "ok"

    @app.get("/fail")
    async def fail() -> str:
        raise ValueError("signal me")

    def on_started(sender: Flask, **extra: Any) -> None:
        started.append(request.path)

    def on_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
        errors.append(exception)

    with (
        request_started.connected_to(on_started, app),
        got_request_exception.connected_to(on_exception, app),
    ):
        assert client.get("/ok").status_code == 200
        assert client.get("/fail").status_code == 500
    assert started == ["/ok", "/fail"]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_with_client_preserves_request_context(app: Flask, client: Any) -> None:
    @app.get("/ctx")
    async def ctx() -> str:
        g.answer = 42
        return "ok"

    with client:
        assert client.get("/ctx?x=1").text == "ok"
        assert request.args["x"] == "1"
        assert request.path == "/ctx"
        assert g.answer == 42
    with pytest.raises(RuntimeError):
        request.args  # noqa: B018 - the context was popped on exit


def test_proxy_fix_on_wsgi_app(app: Flask, client: Any) -> None:
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]

    @app.get("/where")
    async def where() -> dict[str, Any]:
        return {"addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

    response = client.get(
        "/where",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "example.org",
        },
    )
    assert response.json == {"addr": "203.0.113.9", "scheme": "https", "host": "example.org"}
    assert client.get("/where").json["addr"] == "127.0.0.1"


def test_environ_base(app: Flask, client: Any) -> None:
    @app.get("/env")
    async def env() -> dict[str, Any]:
        return {
            "addr": request.remote_addr,
            "custom": request.environ.get("my.custom.key"),
            "agent": request.user_agent.string,
        }

    response = client.get(
        "/env",
        environ_base={
            "REMOTE_ADDR": "198.51.100.4",
            "my.custom.key": "value",
            "HTTP_USER_AGENT": "tester/1.0",
        },
    )
    assert response.json == {"addr": "198.51.100.4", "custom": "value", "agent": "tester/1.0"}
    client.environ_base["REMOTE_ADDR"] = "192.0.2.1"
    assert client.get("/env").json["addr"] == "192.0.2.1"


def test_query_string_path_and_unicode(app: Flask, client: Any) -> None:
    @app.get("/écho/<word>")
    async def echo(word: str) -> dict[str, Any]:
        return {"word": word, "args": request.args.getlist("a"), "path": request.path}

    response = client.get("/écho/naïve?a=1&a=2")
    assert response.json == {"word": "naïve", "args": ["1", "2"], "path": "/écho/naïve"}


def test_async_client_with_cookies() -> None:
    app = Flask(__name__)
    app.secret_key = "k"
    asgi = flask_asgi.ASGI(app)

    @app.get("/count")
    async def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    async def run() -> list[str]:
        async with asgi.test_client() as client:
            return [(await client.get("/count")).text for _ in range(3)]

    assert asyncio.run(run()) == ["1", "2", "3"]


def test_root_path_on_real_server(live_server: Any) -> None:
    app = Flask(__name__)
    asgi = flask_asgi.ASGI(app)

    @app.get("/hello")
    async def hello() -> dict[str, Any]:
        return {
            "script_name": request.script_root,
            "path": request.path,
            "url": url_for("hello"),
        }

    # uvicorn's --root-path: a proxy strips "/api"; uvicorn puts it back in scope["path"]
    # and scope["root_path"], which become SCRIPT_NAME and PATH_INFO.
    base = live_server(asgi, root_path="/api")
    assert httpx.get(base + "/hello").json() == {
        "script_name": "/api",
        "path": "/hello",
        "url": "/api/hello",
    }


def test_factory_pattern_init_app() -> None:
    asgi = flask_asgi.ASGI()
    with pytest.raises(RuntimeError, match="init_app"):
        asgi.app  # noqa: B018

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["FLASK_ASGI_THREADS"] = 3
        asgi.init_app(app)

        @app.get("/")
        async def index() -> str:
            return "factory"

        return app

    app = create_app()
    assert flask_asgi.ASGI.of(app) is asgi
    assert app.test_client().get("/").text == "factory"
    assert asgi.executor._max_workers == 3
    with pytest.raises(RuntimeError, match="another app"):
        asgi.init_app(Flask("other"))
    # An app without an ASGI object gets one on demand (the CLI does this).
    plain = Flask("plain")
    assert isinstance(flask_asgi.ASGI.of(plain), flask_asgi.ASGI)
    assert flask_asgi.ASGI.of(plain) is flask_asgi.ASGI.of(plain)
