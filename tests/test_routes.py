"""The route index (``protocol/routes.py``): one URL match per new path answers both the
sync/async choice and the timeout mark, and an app whose answer cannot vary matches none."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask
from flask.views import MethodView, View
from helpers import http_scope

import flask_asgi
from flask_asgi import ASGI
from flask_asgi.ground.view_timeout import UNSET
from flask_asgi.protocol import routes as routes_module
from flask_asgi.protocol.environ import build_environ
from flask_asgi.protocol.http import HttpHandler


def count_matches(app: Flask) -> list[str]:
    """Every URL match on ``app`` (ours and Flask's own), as the path matched."""
    matched: list[str] = []
    original = app.create_url_adapter

    def create_url_adapter(request: Any) -> Any:
        adapter = original(request)
        if adapter is not None:
            match = adapter.match

            def counting_match(*args: Any, **kwargs: Any) -> Any:
                matched.append(adapter.path_info)
                return match(*args, **kwargs)

            adapter.match = counting_match
        return adapter

    app.create_url_adapter = create_url_adapter  # type: ignore[method-assign]
    return matched


def environ(path: str, method: str = "GET") -> dict[str, Any]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return build_environ(http_scope(path, method), receive)


async def serve(asgi: ASGI, path: str, method: str = "GET") -> int:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await asyncio.wait_for(asgi(http_scope(path, method), receive, send), 10)
    return statuses[0]


def mixed_marked_app() -> tuple[Flask, ASGI]:
    app = Flask(__name__)

    @app.get("/fast")
    @flask_asgi.timeout(2)
    async def fast() -> str:
        return "fast"

    @app.get("/items/<int:n>")
    async def item(n: int) -> str:
        return str(n)

    @app.get("/sync")
    def sync() -> str:
        return "sync"

    return app, ASGI(app)


def test_a_mixed_app_with_a_mark_matches_each_new_path_once_for_both_answers() -> None:
    app, asgi = mixed_marked_app()
    matched = count_matches(app)
    for _ in range(3):
        assert asgi.routes.lookup(environ("/fast")) == (True, 2.0)
        assert asgi.routes.lookup(environ("/items/1")) == (True, UNSET)
        assert asgi.routes.lookup(environ("/items/2")) == (True, UNSET)
        assert asgi.routes.lookup(environ("/sync")) == (False, UNSET)
        assert asgi.routes.lookup(environ("/missing")) == (False, UNSET)
    assert sorted(matched) == ["/fast", "/items/1", "/items/2", "/missing", "/sync"]


async def test_a_request_to_a_mixed_marked_app_adds_one_match_to_flasks_own() -> None:
    app, asgi = mixed_marked_app()
    matched = count_matches(app)
    assert await serve(asgi, "/fast") == 200
    assert matched == ["/fast", "/fast"]  # the index's, then Flask's own
    assert await serve(asgi, "/fast") == 200
    assert await serve(asgi, "/sync") == 200
    assert matched == ["/fast", "/fast", "/fast", "/sync", "/sync"]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_uniform_unmarked_app_matches_no_url(kind: str) -> None:
    app = Flask(__name__)
    if kind == "async":

        @app.get("/a/<name>")
        async def a(name: str) -> str:
            return name
    else:

        @app.get("/a/<name>")
        def a(name: str) -> str:
            return name

    asgi = ASGI(app)
    matched = count_matches(app)
    is_async = kind == "async"
    assert asgi.routes.lookup(environ("/a/x")) == (is_async, UNSET)
    assert asgi.routes.lookup(environ("/nothing", "POST")) == (is_async, UNSET)
    # Static files are read from disk: a worker thread, even under an all-async app.
    assert asgi.routes.lookup(environ("/static/app.css")) == (False, UNSET)
    assert matched == []
    assert await serve(asgi, "/a/y") == 200
    assert matched == ["/a/y"]  # Flask's own only


def test_an_all_async_app_with_a_mark_matches_for_it() -> None:
    app = Flask(__name__)

    @app.get("/a")
    async def a() -> str:
        return "a"

    @app.get("/slow")
    @flask_asgi.timeout(60)
    async def slow() -> str:
        return "slow"

    asgi = ASGI(app)
    matched = count_matches(app)
    assert asgi.routes.lookup(environ("/slow")) == (True, 60.0)
    assert asgi.routes.lookup(environ("/a")) == (True, UNSET)
    assert asgi.routes.lookup(environ("/missing")) == (True, UNSET)  # all async, as before
    assert asgi.routes.lookup(environ("/static/app.css")) == (False, UNSET)
    assert asgi.routes.lookup(environ("/slow")) == (True, 60.0)
    assert matched == ["/slow", "/a", "/missing", "/static/app.css"]


async def test_an_unmarked_mixed_app_matches_once_for_the_choice_only() -> None:
    app = Flask(__name__)

    @app.get("/a")
    async def a() -> str:
        return "a"

    @app.get("/s")
    def s() -> str:
        return "s"

    asgi = ASGI(app)
    matched = count_matches(app)
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = 30  # no mark: no match for the timeout
    for _ in range(2):
        assert asgi.routes.lookup(environ("/a")) == (True, UNSET)
        assert asgi.routes.lookup(environ("/s")) == (False, UNSET)
    assert matched == ["/a", "/s"]


def test_a_view_added_after_the_first_request_is_seen() -> None:
    app = Flask(__name__)

    @app.get("/a")
    async def a() -> str:
        return "a"

    asgi = ASGI(app)
    assert asgi.routes.lookup(environ("/late")) == (True, UNSET)  # uniform: no match

    @app.get("/late")
    def late() -> str:
        return "late"

    assert asgi.routes.lookup(environ("/late")) == (False, UNSET)
    assert asgi.routes.lookup(environ("/later")) == (False, UNSET)  # now cached as no match

    @app.get("/later")
    @flask_asgi.timeout(None)
    async def later() -> str:
        return "later"

    assert asgi.routes.lookup(environ("/later")) == (True, None)
    assert asgi.routes.lookup(environ("/late")) == (False, UNSET)


class Item(MethodView):
    @flask_asgi.timeout(3)
    async def get(self) -> str:
        return "get"

    def post(self) -> str:
        return "post"

    @flask_asgi.timeout(None)
    def put(self) -> str:
        return "put"


@flask_asgi.timeout(4)
class Report(View):
    def dispatch_request(self) -> str:
        return "report"


def class_views_app() -> tuple[Flask, ASGI]:
    app = Flask(__name__)
    app.add_url_rule("/item", view_func=Item.as_view("item"))
    app.add_url_rule("/report", view_func=Report.as_view("report"))
    return app, ASGI(app)


def test_class_based_views_get_their_kind_and_mark_per_method() -> None:
    app, asgi = class_views_app()
    matched = count_matches(app)
    assert asgi.routes.lookup(environ("/item")) == (True, 3.0)
    assert asgi.routes.lookup(environ("/item", "HEAD")) == (True, 3.0)
    assert asgi.routes.lookup(environ("/item", "POST")) == (False, UNSET)
    assert asgi.routes.lookup(environ("/item", "PUT")) == (False, None)
    assert asgi.routes.lookup(environ("/report")) == (False, 4.0)
    assert asgi.routes.lookup(environ("/item", "POST")) == (False, UNSET)
    assert len(matched) == 5


MARKED = {"/item": 3.0, "/report": 4.0}  # the PUT's mark is None: no timer


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (0, MARKED),
        (7, {**MARKED, "/item POST": 7.0}),
        ("2.5", {**MARKED, "/item POST": 2.5}),  # tolerated, as before: parsed
        (-1, MARKED),  # tolerated, as before: no limit
    ],
)
async def test_the_handler_takes_the_mark_else_the_config_read_per_request(
    configured: Any, expected: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, asgi = class_views_app()
    seen: dict[str, float] = {}
    timer = HttpHandler._timer

    def recording_timer(self: HttpHandler, seconds: float, env: dict[str, Any], ex: Any) -> Any:
        method = env["REQUEST_METHOD"]
        seen[env["PATH_INFO"] + ("" if method == "GET" else f" {method}")] = seconds
        return timer(self, seconds, env, ex)

    monkeypatch.setattr(HttpHandler, "_timer", recording_timer)
    assert await serve(asgi, "/item", "POST") == 200  # the route is cached before the change
    seen.clear()
    app.config["FLASK_ASGI_REQUEST_TIMEOUT"] = configured
    for path, method in (("/item", "GET"), ("/item", "POST"), ("/item", "PUT"), ("/report", "GET")):
        assert await serve(asgi, path, method) == 200
    assert seen == expected


def test_the_path_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_module, "_PATH_CACHE_SIZE", 50)
    app, asgi = mixed_marked_app()
    for n in range(50):
        asgi.routes.lookup(environ(f"/items/{n}"))
    assert len(asgi.routes._by_path) == 50
    matched = count_matches(app)
    assert asgi.routes.lookup(environ("/items/50")) == (True, UNSET)
    assert len(asgi.routes._by_path) == 1  # started again
    assert asgi.routes.lookup(environ("/items/0")) == (True, UNSET)
    assert matched == ["/items/50", "/items/0"]
