"""flask-asgi demo: a plain Flask app whose async views run natively on uvicorn's event loop.

Run it (from the project root):

    flask --app examples/demo.py serve --port 8000

or ``python examples/demo.py``. Then open http://127.0.0.1:8000/.

What it shows:

* ``/fanout`` awaits five calls to this server's own ``/slow?ms=200`` at once, through ONE
  HTTP client created at startup (``@asgi.before_serving``) and shared by every request.
  That client's connections belong to the server's event loop; under ``flask[async]``
  each request gets a new loop, so such a client breaks after the first request.
  The five calls overlap: the whole fan-out takes about 200 ms, not 1000 ms.
* ``/blocking`` is a plain sync view calling ``time.sleep``: it runs in flask-asgi's
  worker-thread pool, so it never stalls the loop.
* ``/stream`` streams an async generator with ``flask_asgi.stream``.
* ``/stats`` reports the threads in the process and what the shared client has done.

The client is httpx's ``AsyncClient`` (installed by the project's ``[demo]`` extra).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import click
import httpx
from flask import Flask, Response, jsonify, render_template_string, request

import flask_asgi
from flask_asgi import ASGI

app = Flask(__name__)
asgi = ASGI(app)


# -- the shared, loop-bound HTTP client ------------------------------------------------------


class Upstream:
    """The app-wide client state: created at startup, closed at shutdown."""

    client: httpx.AsyncClient | None = None
    kind = ""
    created_at = 0.0
    calls = 0


upstream = Upstream()


async def get_json(host: str, port: int, target: str) -> Any:
    upstream.calls += 1
    assert upstream.client is not None, "the client is opened by the before_serving hook"
    url_host = f"[{host}]" if ":" in host else host
    response = await upstream.client.get(f"http://{url_host}:{port}{target}")
    response.raise_for_status()
    return response.json()


@asgi.before_serving
async def open_client() -> None:
    upstream.client, upstream.kind = httpx.AsyncClient(timeout=10), "httpx.AsyncClient"
    upstream.created_at = time.time()
    announce()


@asgi.after_serving
async def close_client() -> None:
    if upstream.client is not None:
        await upstream.client.aclose()
        upstream.client = None
    click.echo("flask-asgi demo: shared HTTP client closed.")


def announce() -> None:
    """Print where the demo is, with the host and port of `flask serve` when we have them."""
    ctx = click.get_current_context(silent=True)  # set while `flask serve` runs uvicorn
    params = ctx.params if ctx is not None else {}
    if "host" in params and "port" in params:
        url = f"http://{params['host']}:{params['port']}"
    elif SERVE_ADDRESS is not None:
        url = f"http://{SERVE_ADDRESS[0]}:{SERVE_ADDRESS[1]}"
    else:  # a --workers/--reload child process: uvicorn prints the address
        url = ""
    loop = type(asyncio.get_running_loop()).__module__
    lines = [
        "",
        "  flask-asgi demo",
        f"  open {url + '/' if url else 'the address uvicorn prints below'}  (event loop: {loop})",
        f"    {url}/fanout     5 concurrent calls to /slow?ms=200 via one shared {upstream.kind}",
        f"    {url}/blocking   a sync view doing time.sleep(0.2) in the worker pool",
        f"    {url}/stream     an async generator streamed with flask_asgi.stream",
        f"    {url}/stats      threads and shared-client counters (JSON)",
        "",
    ]
    click.echo("\n".join(lines))


#: The address announce() shows when the app is not started by `flask serve` (see __main__).
SERVE_ADDRESS: tuple[str, int] | None = None


# -- views -----------------------------------------------------------------------------------

INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>flask-asgi demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; }
  code { background: #f3f3f3; padding: 0 .2em; }
  dt { margin-top: .8em; font-weight: 600; }
</style></head>
<body>
<h1>flask-asgi demo</h1>
<p>This is an unmodified Flask {{ flask_version }} app served by uvicorn through
<code>flask_asgi.ASGI(app)</code>. Async views run natively on the server's event loop;
sync views run in a bounded worker-thread pool ({{ threads }} threads).</p>
<dl>
  <dt><a href="{{ url_for('fanout') }}">/fanout</a></dt>
  <dd>Awaits 5 calls to this server's own <code>/slow?ms=200</code> at once with
  <code>asyncio.gather</code>, through one <b>{{ kind }}</b> created in
  <code>@asgi.before_serving</code> and shared by all requests. Expect
  <code>elapsed_ms</code> near 200, not 1000. Reload it: the same client (same
  <code>client_id</code>) keeps working, because every request runs on the loop it
  was created on.</dd>
  <dt><a href="{{ url_for('slow', ms=200) }}">/slow?ms=200</a></dt>
  <dd>An async view: <code>await asyncio.sleep(ms / 1000)</code>, on the loop's thread.</dd>
  <dt><a href="{{ url_for('blocking') }}">/blocking</a></dt>
  <dd>A sync view calling <code>time.sleep(0.2)</code>. It runs in a worker thread
  (see <code>thread</code> in its answer), so the loop keeps serving other requests.</dd>
  <dt><a href="{{ url_for('stream_lines') }}">/stream</a></dt>
  <dd>Five server-sent-event lines, 0.3 s apart, from an async generator returned with
  <code>flask_asgi.stream(...)</code>. Try <code>curl -N</code>.</dd>
  <dt><a href="{{ url_for('stats') }}">/stats</a></dt>
  <dd>JSON: <code>threading.active_count()</code>, the worker threads started so far and
  the shared client's counters.</dd>
</dl>
</body>
</html>
"""


@app.get("/")
def index() -> str:
    from importlib.metadata import version

    return render_template_string(
        INDEX,
        flask_version=version("flask"),
        threads=app.config["FLASK_ASGI_THREADS"],
        kind=upstream.kind or "HTTP client (not started: serve with `flask serve`)",
    )


@app.get("/slow")
async def slow() -> Response:
    ms = max(0, min(request.args.get("ms", 200, type=int), 5000))
    await asyncio.sleep(ms / 1000)
    return jsonify(slept_ms=ms, thread=threading.current_thread().name)


@app.get("/fanout")
async def fanout() -> Response | tuple[Response, int]:
    if upstream.client is None:
        message = "the shared client is created by @asgi.before_serving: serve with `flask serve`"
        return jsonify(error=message), 503
    n = max(1, min(request.args.get("n", 5, type=int), 20))
    ms = max(0, min(request.args.get("ms", 200, type=int), 5000))
    # The address this request arrived on (ASGI scope "server"): call ourselves there.
    host, port = request.environ["SERVER_NAME"], int(request.environ["SERVER_PORT"])
    started = time.perf_counter()
    results = await asyncio.gather(*(get_json(host, port, f"/slow?ms={ms}") for _ in range(n)))
    elapsed_ms = (time.perf_counter() - started) * 1000
    return jsonify(
        calls=n,
        each_ms=ms,
        elapsed_ms=round(elapsed_ms, 1),
        one_after_another_would_take_ms=n * ms,
        client=upstream.kind,
        client_id=hex(id(upstream.client)),
        results=results,
    )


@app.get("/blocking")
def blocking() -> Response:
    started = time.perf_counter()
    time.sleep(0.2)  # blocking: fine here, this view runs in a worker thread
    return jsonify(
        slept_ms=round((time.perf_counter() - started) * 1000, 1),
        thread=threading.current_thread().name,
    )


@app.get("/stream")
async def stream_lines() -> Response:
    async def events() -> AsyncIterator[str]:
        for i in range(1, 6):
            await asyncio.sleep(0.3)
            yield f"data: line {i} of 5 ({request.path}, {time.strftime('%H:%M:%S')})\n\n"

    return Response(flask_asgi.stream(events()), mimetype="text/event-stream")


@app.get("/stats")
async def stats() -> Response:
    names = sorted(t.name for t in threading.enumerate())
    client = upstream.client
    return jsonify(
        active_threads=threading.active_count(),
        worker_threads=sum(name.startswith("flask-asgi-worker") for name in names),
        max_worker_threads=app.config["FLASK_ASGI_THREADS"],
        thread_names=names,
        shared_client={
            "kind": upstream.kind or None,
            "id": hex(id(client)) if client is not None else None,
            "age_s": round(time.time() - upstream.created_at, 1) if client is not None else None,
            "calls": upstream.calls,
        },
    )


if __name__ == "__main__":
    SERVE_ADDRESS = ("127.0.0.1", 8000)
    asgi.run(*SERVE_ADDRESS)  # Flask's app.run(), on uvicorn
