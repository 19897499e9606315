"""Same-origin WebSocket handshakes (no cross-site WebSocket hijacking): a real ``flask
serve`` with a real ``websockets`` client, then the origin rules through the test clients:
hooks never run for a refused handshake, patterns, ``*``, per-route lists, ``ProxyFix``,
other WSGI middleware, the log line and bad settings."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
import websockets
from flask import Blueprint, Flask, request, url_for
from flask.signals import request_started
from websockets.asyncio.client import connect
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

import flask_asgi
from flask_asgi import websocket
from flask_asgi.testing import WebSocketRejected

KEY = "FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS"

SERVED_APP = """
from flask import Flask, request
from flask_asgi import ASGI, websocket

app = Flask(__name__)
asgi = ASGI(app)
calls = []

@app.before_request
def hook():
    calls.append(request.path)

@asgi.websocket("/ws")
async def echo():
    await websocket.accept()
    await websocket.send(f"{request.host_url} {calls.count('/ws')}")
    async for message in websocket:
        await websocket.send(message)
"""


@pytest.fixture
def served_app(tmp_path: Path) -> Path:
    (tmp_path / "origin_app.py").write_text(textwrap.dedent(SERVED_APP))
    return tmp_path


async def _greeting(url: str, **options: Any) -> str:
    async with connect(url, open_timeout=20, **options) as ws:
        greeting = str(await ws.recv())
        await ws.send("ping")
        assert await ws.recv() == "ping"
        return greeting


async def _refused(url: str, **options: Any) -> Any:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(url, open_timeout=20, **options):
            pass
    return refused.value.response


# -- a real server --------------------------------------------------------------------------


async def test_real_server_refuses_a_cross_origin_handshake(
    cli_server: Any, served_app: Path
) -> None:
    server = cli_server("origin_app", cwd=served_app, extra=["--log-level", "warning"])
    url = server.base_url.replace("http://", "ws://") + "/ws"

    response = await _refused(url, origin="http://evil.example")
    assert response.status_code == 403
    assert b"Cross-origin" in response.body

    # The server's own origin, and no Origin at all (not a browser), connect. The hook
    # count the handler reports proves the refused handshake ran no hook.
    assert await _greeting(url, origin=server.base_url) == f"{server.base_url}/ 1"
    assert await _greeting(url) == f"{server.base_url}/ 2"
    # Behind a TLS proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1): https origin.
    https_origin = server.base_url.replace("http://", "https://")
    behind = {"X-Forwarded-Proto": "https"}
    assert await _greeting(url, origin=https_origin, additional_headers=behind) == (
        f"{https_origin}/ 3"
    )
    assert (
        await _refused(url, origin=server.base_url, additional_headers=behind)
    ).status_code == 403

    output = server.output()
    refusals = [line for line in output.splitlines() if "Refused a cross-origin" in line]
    assert len(refusals) == 2, output
    assert "'http://evil.example'" in refusals[0] and KEY in refusals[0]


async def test_real_server_allows_a_configured_origin(
    cli_server: Any, served_app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment variable is comma-separated.
    monkeypatch.setenv(KEY, "https://front.example, https://*.partner.example")
    server = cli_server("origin_app", cwd=served_app, extra=["--log-level", "warning"])
    url = server.base_url.replace("http://", "ws://") + "/ws"

    assert await _greeting(url, origin="https://front.example") == f"{server.base_url}/ 1"
    assert await _greeting(url, origin="https://a.partner.example") == f"{server.base_url}/ 2"
    assert (await _refused(url, origin="http://evil.example")).status_code == 403
    assert (await _refused(url, origin="http://front.example")).status_code == 403  # scheme


# -- test clients: what is refused, and when ------------------------------------------------


def _counted(app: Flask, asgi: flask_asgi.ASGI, kind: str = "async") -> dict[str, int]:
    """A WebSocket route whose hooks and handler count their calls."""
    calls = {"started": 0, "before": 0, "handler": 0, "teardown": 0, "after": 0}

    def started(sender: Any, **extra: Any) -> None:
        calls["started"] += 1

    request_started.connect(started, app, weak=False)

    @app.before_request
    def before() -> None:
        calls["before"] += 1

    @app.after_request
    def after(response: Any) -> Any:
        calls["after"] += 1
        return response

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        calls["teardown"] += 1

    async def async_handler() -> None:
        calls["handler"] += 1
        await websocket.send(request.host_url)

    def sync_handler() -> None:
        calls["handler"] += 1
        websocket.send(request.host_url)

    asgi.websocket("/ws")(async_handler if kind == "async" else sync_handler)
    return calls


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("http_response", [True, False])
def test_refused_before_any_hook_or_handler(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, kind: str, http_response: bool
) -> None:
    calls = _counted(app, asgi, kind)
    for origin in ("http://evil.example", "null", "http://localhost:8080", "https://localhost"):
        with pytest.raises(WebSocketRejected) as refused:
            with client.websocket("/ws", origin=origin, http_response=http_response):
                pass
        assert refused.value.status_code == 403
        if http_response:
            assert refused.value.response.text == "Cross-origin WebSocket connection refused.\n"
    assert calls == {"started": 0, "before": 0, "handler": 0, "teardown": 0, "after": 0}

    with client.websocket("/ws") as ws:  # the client's default: the same origin
        assert ws.receive() == "http://localhost/"
    assert calls == {"started": 1, "before": 1, "handler": 1, "teardown": 1, "after": 0}


async def test_async_client_origins(app: Flask, asgi: flask_asgi.ASGI) -> None:
    calls = _counted(app, asgi)
    async with asgi.test_client() as client:
        with pytest.raises(WebSocketRejected):
            async with client.websocket("/ws", headers={"Origin": "http://evil.example"}):
                pass
        assert calls["before"] == calls["handler"] == 0
        for options in ({}, {"origin": False}, {"origin": "HTTP://LocalHost:80"}):
            async with client.websocket("/ws", **options) as ws:
                assert await ws.receive() == "http://localhost/"
    assert calls["handler"] == 3


def test_same_origin_follows_the_request(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    _counted(app, asgi)
    with client.websocket("/ws", base_url="https://example.com:8443") as ws:
        assert ws.receive() == "https://example.com:8443/"
    # wss is the https origin, and default ports are the same origin written without.
    with client.websocket("/ws", base_url="https://example.com", origin="https://example.com:443"):
        pass
    for origin in ("https://example.com", "http://example.com:8443", "https://example.com:8443/x"):
        with pytest.raises(WebSocketRejected):
            with client.websocket("/ws", base_url="https://example.com:8443", origin=origin):
                pass


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),
        ("https://APP.example.com", True),
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:8443", False),
        ("https://a.partner.example", True),
        ("https://a.b.partner.example", True),
        ("https://partner.example", False),  # *.x is x's subdomains, not x
        ("https://evilpartner.example", False),
        ("http://a.partner.example", False),
        ("http://x.any-scheme.example", True),
        ("https://x.any-scheme.example", True),
        ("https://x.any-scheme.example:444", False),
        ("http://localhost:3000", True),  # :* is any port
        ("http://localhost", True),
        ("https://localhost:3000", False),
        ("http://[::1]:5173", True),
        ("https://app.example.com, https://evil.example", False),  # two Origin headers
        ("null", False),
        ("https://xn--bcher-kva.example", True),  # listed as https://bücher.example
    ],
)
def test_origin_patterns(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, origin: str, allowed: bool
) -> None:
    app.config[KEY] = [
        "https://app.example.com",
        "https://*.partner.example",
        "*.any-scheme.example",
        "http://localhost:*",
        "http://[::1]:5173/",
        "https://bücher.example",
    ]
    calls = _counted(app, asgi)
    if allowed:
        with client.websocket("/ws", origin=origin) as ws:
            assert ws.receive() == "http://localhost/"
    else:
        with pytest.raises(WebSocketRejected):
            with client.websocket("/ws", origin=origin):
                pass
    assert calls["handler"] == int(allowed)


def test_star_allows_any_origin(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    app.config[KEY] = ["*"]
    calls = _counted(app, asgi)
    for origin in ("http://evil.example", "null", "https://x.example:1"):
        with client.websocket("/ws", origin=origin):
            pass
    assert calls["handler"] == 3


def test_a_comma_separated_string_setting(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    app.config[KEY] = "https://one.example, https://two.example"  # as from_prefixed_env gives
    calls = _counted(app, asgi)
    for origin in ("https://one.example", "https://two.example"):
        with client.websocket("/ws", origin=origin):
            pass
    with pytest.raises(WebSocketRejected):
        with client.websocket("/ws", origin="https://three.example"):
            pass
    assert calls["handler"] == 2


def test_per_route_list_replaces_the_setting(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    app.config[KEY] = ["*"]
    seen: list[str] = []

    @asgi.websocket("/private", allowed_origins=[])
    async def private() -> None:
        seen.append("private")
        await websocket.accept()

    bp = Blueprint("widgets", __name__, url_prefix="/widgets")

    @flask_asgi.websocket_route(bp, "/ws", allowed_origins=["https://front.example"])
    async def widget() -> None:
        seen.append(url_for("widgets.widget", _external=True))
        await websocket.accept()

    app.register_blueprint(bp)

    with pytest.raises(WebSocketRejected):  # config says "*", the route says own origin only
        with client.websocket("/private", origin="http://evil.example"):
            pass
    with client.websocket("/private"):
        pass
    with client.websocket("/widgets/ws", origin="https://front.example"):
        pass
    with pytest.raises(WebSocketRejected):
        with client.websocket("/widgets/ws", origin="https://other.example"):
            pass
    assert seen == ["private", "ws://localhost/widgets/ws"]


def test_a_view_function_keeps_its_list(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    """``allowed_origins`` lives on the handler: a handler without one uses the setting."""
    app.config[KEY] = ["https://front.example"]

    @asgi.websocket("/open", allowed_origins=["*"])
    async def open_socket() -> None:
        await websocket.accept()

    @asgi.websocket("/default")
    async def default_socket() -> None:
        await websocket.accept()

    with client.websocket("/open", origin="http://anyone.example"):
        pass
    with client.websocket("/default", origin="https://front.example"):
        pass
    with pytest.raises(WebSocketRejected):
        with client.websocket("/default", origin="http://anyone.example"):
            pass


# -- behind a proxy, and other WSGI middleware ------------------------------------------------

FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}


def test_proxy_fix_host_is_the_own_origin(app: Flask, asgi: flask_asgi.ASGI, client: Any) -> None:
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
    seen: list[str] = []

    @asgi.websocket("/ws")
    async def socket() -> None:
        seen.append(f"{request.host_url} {url_for('socket', _external=True)}")
        await websocket.accept()

    headers = {**FORWARDED, "Origin": "https://public.example"}
    with client.websocket("/ws", headers=headers):
        pass
    # The handler sees the proxied request too, as an HTTP view does.
    assert seen == ["https://public.example/ wss://public.example/ws"]
    with pytest.raises(WebSocketRejected):  # the host the proxy talked to is not the origin
        with client.websocket("/ws", headers=FORWARDED, origin="http://localhost"):
            pass
    assert len(seen) == 1


def test_forwarded_headers_without_proxy_fix_are_not_trusted(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    _counted(app, asgi)
    with pytest.raises(WebSocketRejected):
        with client.websocket("/ws", headers={**FORWARDED, "Origin": "https://public.example"}):
            pass
    with client.websocket("/ws", headers=FORWARDED) as ws:  # default: the raw host's origin
        assert ws.receive() == "http://localhost/"


def test_middleware_that_answers_refuses_the_handshake(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    def other(environ: Any, start_response: Any) -> Any:
        return Response("the other app", status=404, headers={"X-Other": "1"})(
            environ, start_response
        )

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/other": other})  # type: ignore[method-assign]
    calls = _counted(app, asgi)
    with pytest.raises(WebSocketRejected) as refused:
        with client.websocket("/other/ws"):
            pass
    assert refused.value.status_code == 404
    assert refused.value.response.headers["X-Other"] == "1"
    assert refused.value.response.text == "the other app"
    with client.websocket("/ws"):  # the rest still reaches Flask
        pass
    assert calls["handler"] == 1


def test_middleware_sees_the_handshake_as_an_upgrade(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    """The handshake stops where Flask's wsgi_app would run: what a middleware does to
    the environ applies, and what it does with the response sees ``101`` and no body."""
    events: list[str] = []

    class Tagging:
        def __init__(self, app: Any) -> None:
            self.app = app

        def __call__(self, environ: Any, start_response: Any) -> Any:
            environ["HTTP_X_TAG"] = "tagged"
            events.append("before")

            def recording(status: str, headers: Any, exc_info: Any = None) -> Any:
                events.append(status)
                return start_response(status, headers, exc_info)

            try:
                body = b"".join(self.app(environ, recording))
                events.append(f"body {body!r}")
                return [body]
            finally:
                events.append("finally")

    original = Tagging(app.wsgi_app)
    app.wsgi_app = original  # type: ignore[method-assign]

    @asgi.websocket("/ws")
    async def socket() -> None:
        events.append("handler")
        await websocket.send(request.headers.get("X-Tag", "untagged"))

    with client.websocket("/ws") as ws:
        assert ws.receive() == "tagged"
    assert events == ["before", "101 Switching Protocols", "body b''", "finally", "handler"]
    # The app's own middleware object was not changed.
    assert app.wsgi_app is original and getattr(original.app, "__self__", None) is app
    events.clear()
    assert client.get("/ws").status_code == 400  # HTTP: Werkzeug's WebsocketMismatch
    assert events == ["before", "400 BAD REQUEST", events[2], "finally"]


def test_middleware_without_an_app_attribute(
    app: Flask, asgi: flask_asgi.ASGI, client: Any
) -> None:
    """A closure cannot be walked: the handshake gets the environ as the server built it."""
    inner = app.wsgi_app

    def closure(environ: Any, start_response: Any) -> Any:
        environ["HTTP_X_TAG"] = "tagged"
        return inner(environ, start_response)

    app.wsgi_app = closure  # type: ignore[method-assign]

    @asgi.websocket("/ws")
    async def socket() -> None:
        await websocket.send(request.headers.get("X-Tag", "untagged"))

    @app.route("/page")
    def page() -> str:
        return request.headers.get("X-Tag", "untagged")

    with client.websocket("/ws") as ws:
        assert ws.receive() == "untagged"
    assert client.get("/page").text == "tagged"  # HTTP requests do go through it


# -- the log line, and bad settings ---------------------------------------------------------


def test_one_log_line_names_origin_and_setting(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _counted(app, asgi)

    @asgi.websocket("/route", allowed_origins=["https://front.example"])
    async def route() -> None:
        await websocket.accept()

    caplog.set_level(logging.INFO, logger="flask_asgi")
    with pytest.raises(WebSocketRejected):
        with client.websocket("/ws", origin="http://evil.example\x1b[2J"):
            pass
    records = [r for r in caplog.records if r.name == "flask_asgi"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "\x1b" not in message  # the origin is quoted (repr): no terminal escapes
    assert "'http://evil.example\\x1b[2J'" in message
    assert "/ws" in message and "'http://localhost'" in message and KEY in message

    caplog.clear()
    with pytest.raises(WebSocketRejected):
        with client.websocket("/route", origin="http://evil.example"):
            pass
    (record,) = [r for r in caplog.records if r.name == "flask_asgi"]
    assert "allowed_origins" in record.getMessage() and KEY not in record.getMessage()

    caplog.clear()
    with client.websocket("/ws"), client.websocket("/ws", origin=False):
        pass
    assert not [r for r in caplog.records if r.name == "flask_asgi"]  # allowed: nothing logged


@pytest.mark.parametrize(
    "setting", [["https://app.example.com/path"], ["https://*"], ["a*.example.com"], [3], 42]
)
def test_a_bad_setting_is_a_clear_error(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, setting: Any
) -> None:
    app.config[KEY] = setting
    calls = _counted(app, asgi)
    with client.websocket("/ws"):  # a same-origin handshake never reads the setting
        pass
    with pytest.raises(ValueError, match=KEY):
        with client.websocket("/ws", origin="https://app.example.com"):
            pass
    assert calls["handler"] == 1


def test_a_bad_route_list_fails_at_registration(asgi: flask_asgi.ASGI) -> None:
    with pytest.raises(ValueError, match="allowed_origins of '/ws'.*'http://a.example/x'"):
        asgi.websocket("/ws", allowed_origins=["http://a.example/x"])


def test_each_app_has_its_own_list() -> None:
    one, two = Flask("one"), Flask("two")
    flask_asgi.ASGI(one), flask_asgi.ASGI(two)
    one.config[KEY].append("https://one.example")
    assert two.config[KEY] == []


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_dns_rebinding_is_refused_by_trusted_hosts_before_any_hook(
    app: Flask, asgi: flask_asgi.ASGI, client: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rebound name sends itself as Host and as Origin: same-origin, so only TRUSTED_HOSTS
    can tell. It is checked first, before the origin and before any hook."""
    calls = _counted(app, asgi, kind)
    app.config["TRUSTED_HOSTS"] = ["app.example"]
    rebound = "http://attacker.example:8000"
    with pytest.raises(WebSocketRejected) as refused:
        with client.websocket("/ws", base_url=rebound, origin=rebound):
            pass
    assert refused.value.status_code == 400
    assert refused.value.response.text == "Host not trusted (TRUSTED_HOSTS).\n"
    assert calls == {"started": 0, "before": 0, "handler": 0, "teardown": 0, "after": 0}
    assert "Host 'attacker.example:8000' is not in TRUSTED_HOSTS" in caplog.text
    with client.websocket("/ws", base_url="http://app.example") as ws:  # trusted: served
        assert ws.receive() == "http://app.example/"
    assert calls["handler"] == 1
