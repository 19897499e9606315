"""Production limits: slow bodies never hold a worker thread, and time out (408)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from flask import Flask, request
from helpers import body_reader, http_scope

from flask_asgi import ASGI
from flask_asgi.ground.counters import counters
from flask_asgi.ground.settings import DEFAULTS
from flask_asgi.protocol.body import BodyTimeout

TIMEOUT_LOG = "FLASK_ASGI_BODY_TIMEOUT"


class Client:
    """An ASGI client that hands the app body messages at its own pace and counts them."""

    def __init__(self, chunks: list[bytes], stall: bool = False, delay: float = 0.0) -> None:
        self.chunks = list(chunks)
        self.stall = stall  # after the chunks: never send the rest (a client gone quiet)
        self.delay = delay
        self.given = 0  # body bytes handed to the app so far
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.chunks:
            chunk = self.chunks.pop(0)
            self.given += len(chunk)
            more = bool(self.chunks) or self.stall
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self.stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def call(self, asgi: ASGI, path: str, length: int) -> int:
        headers = [(b"host", b"test"), (b"content-length", str(length).encode())]
        await asgi(http_scope(path, "POST", headers), self.receive, self.send)
        return int(self.sent[0]["status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.sent[0]["headers"]).get(name)


def upload_app(**config: Any) -> tuple[ASGI, list[Any]]:
    app = Flask(__name__)
    app.config.update(config)
    seen: list[Any] = []

    read = body_reader(seen)

    @app.post("/sync")
    def sync_upload() -> str:
        return read()

    @app.post("/async")
    async def async_upload() -> str:
        return read()

    return ASGI(app), seen


async def test_sync_view_starts_only_once_its_body_is_in() -> None:
    """The body is received on the loop first: when the sync view runs, every byte of a
    small body has already been taken from the client (no receive from the thread)."""
    asgi, _ = upload_app()
    app = asgi.app
    at_start: list[int] = []
    client = Client([b"x" * 1000] * 10, delay=0.01)

    @app.post("/count")
    def count() -> str:
        at_start.append(client.given)
        return str(len(request.get_data()))

    assert await client.call(asgi, "/count", 10_000) == 200
    assert at_start == [10_000]
    assert client.sent[1]["body"] == b"10000"


async def test_large_sync_body_streams_through_a_bounded_read_ahead() -> None:
    """Past FLASK_ASGI_BODY_PREREAD the body streams to the thread, and the loop is never
    more than the read-ahead buffer (plus one message) ahead of what the view has read."""
    preread = 64 * 1024
    asgi, _ = upload_app(FLASK_ASGI_BODY_PREREAD=preread)
    chunk = 16 * 1024
    client = Client([b"y" * chunk] * 64)  # 1 MiB
    ahead: list[int] = []

    @asgi.app.post("/stream")
    def stream() -> str:
        stream, total = request.stream, 0
        while data := stream.read(chunk):
            total += len(data)
            ahead.append(client.given - total)
            time.sleep(0.002)  # a slow app: the buffer fills up
        return str(total)

    assert await client.call(asgi, "/stream", 64 * chunk) == 200
    assert client.sent[1]["body"] == str(64 * chunk).encode()
    assert len(ahead) == 64
    assert max(ahead) <= preread + chunk
    assert max(ahead) >= preread - chunk  # it did read ahead


@pytest.mark.parametrize("path", ["/sync", "/async"])
async def test_body_timeout_is_408_and_closes(path: str, caplog: pytest.LogCaptureFixture) -> None:
    asgi, seen = upload_app(FLASK_ASGI_BODY_TIMEOUT=0.3)
    client = Client([b"x" * 10], stall=True)
    started = time.monotonic()
    timeouts = counters.body_timeouts_total
    with caplog.at_level(logging.WARNING, "flask_asgi"):
        assert await client.call(asgi, path, 100) == 408
    assert counters.body_timeouts_total - timeouts == 1
    assert 0.25 < time.monotonic() - started < 5
    assert client.header(b"connection") == b"close"
    # A sync view never ran (its thread was never taken); an async one saw the error.
    assert seen == ([] if path == "/sync" else ["BodyTimeout"])
    assert sum(TIMEOUT_LOG in r.getMessage() for r in caplog.records) == 1


async def test_body_timeout_while_a_sync_view_streams_the_body_in() -> None:
    """A body larger than the preread times out in the middle: the sync view sees
    BodyTimeout at its read (Flask answers 408) and the connection closes."""
    asgi, seen = upload_app(FLASK_ASGI_BODY_TIMEOUT=0.3, FLASK_ASGI_BODY_PREREAD=1000)
    client = Client([b"x" * 1000] * 3, stall=True)
    assert await client.call(asgi, "/sync", 10_000) == 408
    assert seen == ["BodyTimeout"]
    assert client.header(b"connection") == b"close"


async def test_body_timeout_counts_only_waiting_for_the_client() -> None:
    """An async view that reads late is not punished: the budget is spent only while the
    server waits for the client's bytes."""
    asgi, seen = upload_app(FLASK_ASGI_BODY_TIMEOUT=0.2)

    @asgi.app.post("/late")
    async def late() -> str:
        await asyncio.sleep(0.4)
        return str(len(request.get_data()))

    client = Client([b"z" * 100] * 3)
    assert await client.call(asgi, "/late", 300) == 200
    assert client.sent[1]["body"] == b"300"


@pytest.mark.parametrize(("timeout", "status"), [(5.0, 200), (0.25, 408)])
async def test_body_timeout_counts_receives_that_wait(timeout: float, status: int) -> None:
    """A message that has already arrived takes no timer, but a receive() that waits runs
    under the budget: three messages 0.1 s apart fit in 5 s and not in 0.25 s."""
    asgi, seen = upload_app(FLASK_ASGI_BODY_TIMEOUT=timeout)
    client = Client([b"w" * 100] * 3, delay=0.1)
    assert await client.call(asgi, "/async", 300) == status
    assert seen == ([300] if status == 200 else ["BodyTimeout"])


def test_body_timeout_is_a_408_http_exception() -> None:
    assert BodyTimeout.code == 408


def _worker_threads() -> int:
    return sum(t.name.startswith("flask-asgi-worker") for t in threading.enumerate())


def test_slow_bodies_do_not_starve_sync_endpoints(live_server: Any) -> None:
    """60 clients dribble their bodies at 1 B/s to a sync endpoint served by 4 threads:
    sync and async endpoints keep answering at once, no thread is taken by a dribbler,
    and every dribbler gets its 408 (one log line each) once its timeout is spent."""
    app = Flask(__name__)
    app.config.update(FLASK_ASGI_THREADS=4, FLASK_ASGI_BODY_TIMEOUT=4.0)
    asgi = ASGI(app)
    uploads: list[int] = []

    @app.post("/upload")
    def upload() -> str:
        uploads.append(len(request.get_data()))
        return "ok"

    @app.get("/sync-ping")
    def sync_ping() -> str:
        return "sync"

    @app.get("/async-ping")
    async def async_ping() -> str:
        return "async"

    base = live_server(asgi)
    port = int(base.rsplit(":", 1)[1])
    threads_before = _worker_threads()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("flask_asgi").addHandler(handler)
    dribblers = []
    try:
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
            dribblers.append(sock)
        stop = threading.Event()

        def dribble() -> None:
            while not stop.wait(1.0):
                for sock in dribblers:
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass

        sender = threading.Thread(target=dribble, daemon=True)
        sender.start()
        time.sleep(0.5)
        latencies = []
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(5):
                for path in ("/sync-ping", "/async-ping"):
                    started = time.monotonic()
                    assert client.get(path).status_code == 200
                    latencies.append(time.monotonic() - started)
        assert max(latencies) < 1.5, latencies  # answered while the 4 s body timeout runs
        assert _worker_threads() - threads_before <= 4
        stop.set()  # quiet from now on (bytes sent after the server closes would reset it)
        sender.join(5)
        statuses = []
        for sock in dribblers:
            sock.settimeout(15)
            data = b""
            while chunk := sock.recv(65536):  # b"": the server closed the connection
                data += chunk
            statuses.append(data.split(b" ", 2)[1])
    finally:
        logging.getLogger("flask_asgi").removeHandler(handler)
        for sock in dribblers:
            sock.close()
    assert statuses == [b"408"] * 60
    assert uploads == []  # the view never ran for a body that never came
    assert sum(TIMEOUT_LOG in r.getMessage() for r in records) == 60


# -- overload: 503 with Retry-After before the app runs, counted ---------------------------


async def _get(asgi: ASGI, path: str) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # no body; the client stays
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(http_scope(path), receive, send)
    return int(sent[0]["status"]), dict(sent[0]["headers"])


async def _until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class _Blocking:
    """An app whose sync ``GET /block`` counts its calls in ``entered`` and waits (30 s at
    most) for ``release``; ``config`` is added to app.config before ASGI(app)."""

    def __init__(self, **config: Any) -> None:
        self.app = Flask(__name__)
        self.app.config.update(config)
        self.asgi = ASGI(self.app)
        self.release = threading.Event()
        self.entered: list[int] = []

        @self.app.get("/block")
        def block() -> str:
            self.entered.append(1)
            self.release.wait(30)
            return "done"

    async def occupy(self, threads: int) -> list[asyncio.Future[tuple[int, dict[bytes, bytes]]]]:
        """``threads`` requests to /block, returned once each is in the view."""
        busy = [asyncio.ensure_future(_get(self.asgi, "/block")) for _ in range(threads)]
        await _until(lambda: len(self.entered) == threads)
        return busy


async def test_max_waiting_refuses_sync_requests_past_the_queue() -> None:
    """3 threads busy, 5 requests may wait: of 14 more, 5 wait and 9 get 503 + Retry-After
    without the app seeing them; the 8 admitted all complete."""
    blocking = _Blocking(FLASK_ASGI_THREADS=3, FLASK_ASGI_MAX_WAITING=5)
    asgi, release, entered = blocking.asgi, blocking.release, blocking.entered
    seen_by_app: list[int] = []
    blocking.app.before_request(lambda: seen_by_app.append(1))
    before = counters.snapshot()
    first = await blocking.occupy(3)
    more = [asyncio.ensure_future(_get(asgi, "/block")) for _ in range(14)]
    await _until(lambda: sum(task.done() for task in more) == 9)
    assert counters.waiting - before["waiting"] == 5
    release.set()
    results = await asyncio.gather(*first, *more)
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 8 and statuses.count(503) == 9
    assert all(headers[b"retry-after"] == b"1" for status, headers in results if status == 503)
    assert len(entered) == len(seen_by_app) == 8
    after = counters.snapshot()
    assert after["refused_max_waiting_total"] - before["refused_max_waiting_total"] == 9
    assert after["waiting"] == before["waiting"]


async def test_max_requests_caps_requests_in_flight() -> None:
    """FLASK_ASGI_MAX_REQUESTS=4: with 4 async requests in flight, 3 more get 503 with
    Retry-After and never reach the app; the gauge returns to where it was."""
    app = Flask(__name__)
    app.config["FLASK_ASGI_MAX_REQUESTS"] = 4
    asgi = ASGI(app)
    release = asyncio.Event()
    entered: list[int] = []

    @app.get("/wait")
    async def wait() -> str:
        entered.append(1)
        await release.wait()
        return "done"

    before = counters.snapshot()
    first = [asyncio.ensure_future(_get(asgi, "/wait")) for _ in range(4)]
    await _until(lambda: len(entered) == 4)
    assert counters.in_flight - before["in_flight"] == 4
    refused = await asyncio.gather(*(_get(asgi, "/wait") for _ in range(3)))
    assert [status for status, _ in refused] == [503] * 3
    assert all(headers[b"retry-after"] == b"1" for _, headers in refused)
    release.set()
    assert [status for status, _ in await asyncio.gather(*first)] == [200] * 4
    assert len(entered) == 4
    after = counters.snapshot()
    assert after["refused_max_requests_total"] - before["refused_max_requests_total"] == 3
    assert after["in_flight"] == before["in_flight"]


def test_limits_are_off_or_bounded_by_default() -> None:
    assert DEFAULTS["FLASK_ASGI_MAX_REQUESTS"] == 0
    assert DEFAULTS["FLASK_ASGI_MAX_WAITING"] == 2048  # gunicorn's default backlog
    assert DEFAULTS["FLASK_ASGI_QUEUE_TIMEOUT"] == 10.0
    assert DEFAULTS["FLASK_ASGI_BODY_TIMEOUT"] == 60.0
    assert DEFAULTS["FLASK_ASGI_BODY_PREREAD"] == 1024 * 1024


def test_slow_headers_are_closed_after_the_header_timeout(live_server: Any) -> None:
    """uvicorn has no header timeout: flask serve's server closes connections that sent
    no complete headers within FLASK_ASGI_HEADER_TIMEOUT (here 1 s): 40 dribbling header
    bytes and 10 silent ones are all closed and counted, while ordinary requests keep
    being answered."""
    app = Flask(__name__)
    app.config["FLASK_ASGI_HEADER_TIMEOUT"] = 1.0
    asgi = ASGI(app)
    app.get("/")(lambda: "ok")
    base = live_server(asgi, graceful=True)
    port = int(base.rsplit(":", 1)[1])
    before = counters.header_timeouts_total
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    try:
        for sock in slow[:40]:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        deadline = time.monotonic() + 15
        open_ = list(slow)
        while open_ and time.monotonic() < deadline:
            for sock in slow[:40]:
                try:
                    sock.send(b"X")  # one header byte at a time
                except OSError:
                    pass
            with httpx.Client(base_url=base, timeout=5) as client:
                assert client.get("/").text == "ok"  # ordinary requests still work
            still = []
            for sock in open_:
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        continue  # closed by the server
                except BlockingIOError:
                    pass
                except OSError:
                    continue  # reset: closed too
                still.append(sock)
            open_ = still
            time.sleep(0.3)
        assert open_ == [], f"{len(open_)} slow connections still open"
        assert counters.header_timeouts_total - before >= 50
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("mode", ["bodies", "headers", "overload", "readers"])
def test_stress_slow_clients_short(mode: str) -> None:
    """The short version of stress/slow_clients.py (what docs/reliability.md reports, at
    a smaller scale) against a real `flask serve`."""
    import json
    import subprocess

    from helpers import ROOT, VENV_BIN

    result = subprocess.run(
        [
            str(VENV_BIN / "python"),
            str(ROOT / "stress" / "slow_clients.py"),
            mode,
            "--clients",
            "60",
            "--seconds",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    got = report["attackers_got"]
    if mode == "bodies":
        assert got == {"408 + close": 60}
        assert report["server_peak_threads_fds"][0] <= 3  # no worker thread taken
    elif mode == "headers":
        assert sum(n for outcome, n in got.items() if outcome.startswith("closed")) == 60
    elif mode == "readers":  # 60 non-readers of a 5 MB file (the script wants probes < 1 s)
        assert got == {"HTTP/1.1 200": 60}
    else:
        assert got.get("503", 0) > 0 and got.get("200", 0) > 0
    assert report["probe_max_s"] < 3


async def test_queue_timeout_refuses_sync_requests_that_waited_too_long() -> None:
    """3 threads busy, FLASK_ASGI_QUEUE_TIMEOUT=0.3: 5 more sync requests wait 0.3 s for a
    thread, then get 503 + Retry-After without the app seeing them; the busy ones finish."""
    blocking = _Blocking(
        FLASK_ASGI_THREADS=3, FLASK_ASGI_MAX_WAITING=0, FLASK_ASGI_QUEUE_TIMEOUT=0.3
    )
    asgi, release, entered = blocking.asgi, blocking.release, blocking.entered
    before = counters.snapshot()
    first = await blocking.occupy(3)
    started = time.monotonic()
    refused = await asyncio.gather(*(_get(asgi, "/block") for _ in range(5)))
    waited = time.monotonic() - started
    assert [status for status, _ in refused] == [503] * 5
    assert all(headers[b"retry-after"] == b"1" for _, headers in refused)
    assert 0.25 <= waited < 10  # bounded by the queue timeout, not by the busy views
    release.set()
    assert [status for status, _ in await asyncio.gather(*first)] == [200] * 3
    assert len(entered) == 3  # the refused ones never ran
    after = counters.snapshot()
    assert after["refused_queue_timeout_total"] - before["refused_queue_timeout_total"] == 5
    assert after["waiting"] == before["waiting"]
    assert asgi.stats()["refused"]["queue_timeout"] == after["refused_queue_timeout_total"]


async def test_a_request_a_thread_takes_in_time_is_served() -> None:
    """One thread, busy for 0.2 s; the queued request gets it well within its 5 s."""
    app = Flask(__name__)
    app.config.update(FLASK_ASGI_THREADS=1, FLASK_ASGI_QUEUE_TIMEOUT=5)
    asgi = ASGI(app)

    @app.get("/nap")
    def nap() -> str:
        time.sleep(0.2)
        return "rested"

    results = await asyncio.gather(*(_get(asgi, "/nap") for _ in range(4)))
    assert [status for status, _ in results] == [200] * 4


async def test_a_thousand_concurrent_50ms_sync_requests_all_succeed_by_default() -> None:
    """Issue 20: the default pool and queue serve a burst of 1,000 sync views that wait on
    I/O for 50 ms (a database, an HTTP call), where a pool of 40 and a queue of 200 refused
    ~97 %: all 200, at most FLASK_ASGI_THREADS threads, within a bound far from 1,000 x 50 ms
    run one after another."""
    app = Flask(__name__)
    asgi = ASGI(app)
    threads: set[str] = set()

    @app.get("/io")
    def io() -> str:
        threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return "ok"

    started = time.monotonic()
    results = await asyncio.gather(*(_get(asgi, "/io") for _ in range(1000)))
    elapsed = time.monotonic() - started
    assert [status for status, _ in results].count(200) == 1000
    assert len(threads) <= app.config["FLASK_ASGI_THREADS"] == 256
    assert len(threads) > 40  # the pool grew for the burst (40 was the old size)
    assert elapsed < 30  # 1,000 x 50 ms one at a time would be 50 s
