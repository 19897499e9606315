"""A socket fuzzer: random and mutated raw HTTP/1.1 requests against ``flask serve``.

    python stress/fuzz_sockets.py [--requests 20000] [--concurrency 100] [--seed 9]

Each request starts from a valid one (GET, HEAD, OPTIONS, POST with a Content-Length or
chunked, ``Expect: 100-continue``, a WebSocket upgrade, two pipelined requests...) and gets
one to three mutations: bytes flipped, inserted (CR, LF, NUL, high bytes), deleted,
duplicated or cut off; the method, version, path or Host replaced; huge or many headers;
wrong, negative, doubled Content-Length beside Transfer-Encoding; bad chunk sizes. It is
written on a raw socket to ``resource_app.py`` and everything that comes back (until the
server closes, or 0.5 s of silence) must parse as a sequence of HTTP/1.1 responses. A
probe must get ``200`` after every batch, the server must be alive at the end, and its log
must show no exception that escaped the ASGI app. Exit status 1 otherwise. Loopback only;
about a minute with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import STRESS_DIR, free_port, start_server, stop_server

H = b"Host: x\r\n"
SEEDS: list[bytes] = [
    b"GET /async HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /sync?q=1&r=%20%zz HTTP/1.1\r\n" + H + b"Accept: */*\r\n\r\n",
    b"HEAD /sync HTTP/1.1\r\n" + H + b"\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /missing HTTP/1.0\r\n\r\n",
    b"GET /error HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /stream?n=3 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /stream-sync?n=3 HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    b"POST /upload-async HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /upload-async HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
    b"POST /upload HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /upload HTTP/1.1\r\n"
    + H
    + b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 58\r\n\r\n"
    + b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B--\r\n',
    b"GET /async HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    b"GET /async HTTP/1.1\r\n" + H + b"\r\nGET /sync HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /async HTTP/1.1\r\n" + H + b"X-Forwarded-Proto: ws\r\nX-Forwarded-For: ::1\r\n\r\n",
]
NASTY = [b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3\x28", b" ", b":", b"%", b"\t", b"\x7f"]


def _span(data: bytes, rng: random.Random) -> tuple[int, int]:
    start = rng.randrange(len(data) + 1)
    return start, min(len(data), start + rng.randrange(1, 40))


def _flip(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    at = rng.randrange(len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]


def _insert(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    junk = rng.choice([rng.choice(NASTY), rng.randbytes(rng.randrange(1, 16))])
    return data[:at] + junk + data[at:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    start, end = _span(data, rng)
    return data[:start] + data[end:]


def _duplicate(data: bytes, rng: random.Random) -> bytes:
    start, end = _span(data, rng)
    return data[:end] + data[start:end] + data[end:]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _head_line(data: bytes, rng: random.Random) -> bytes:
    line, sep, rest = data.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return data
    which = rng.randrange(3)
    choices = [
        [b"GET", b"get", b"PUT", b"DELETE", b"PATCH", b"BREW", b"G\x00T", b"", b"A" * 300],
        [b"/", b"*", b"//x", b"/../../etc", b"/%00", b"/\xff\xfe", b"/" + b"a" * 20000, b"x"],
        [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1.1x", b"http/1.1", b"HTTP/", b""],
    ][which]
    parts[which] = rng.choice(choices)
    return b" ".join(parts) + sep + rest


def _headers(data: bytes, rng: random.Random) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    extra = rng.choice(
        [
            b"X-Big: " + b"v" * rng.choice([1000, 10_000, 70_000]),
            b"\r\n".join(b"X-Many-%d: 1" % n for n in range(rng.choice([50, 200, 1000]))),
            b"Content-Length: " + rng.choice([b"-1", b"abc", b"99999999999999999999", b"1, 2"]),
            b"Content-Length: 3\r\nContent-Length: 7",
            b"Transfer-Encoding: chunked\r\nContent-Length: 4",
            b"Transfer-Encoding: gzip, chunked",
            b"Host: a\r\nHost: b",
            b"Bad Header: space in the name",
            b"X_Under_Score: 1",
            b": no name",
            b"Cookie: " + b"a=b; " * 500,
            b"X-Folded: a\r\n continued",
        ]
    )
    return head + b"\r\n" + extra + sep + body


def _chunks(data: bytes, rng: random.Random) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    bad = rng.choice([b"zz\r\nab\r\n0\r\n\r\n", b"-5\r\nhello\r\n", b"ffffffffffffffff\r\n"])
    return head + b"\r\nTransfer-Encoding: chunked" + sep + bad


MUTATIONS = [_flip, _insert, _delete, _duplicate, _truncate, _head_line, _headers, _chunks]


def make_request(rng: random.Random) -> bytes:
    data = rng.choice(SEEDS)
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(1, 200))  # noise
    for _ in range(rng.choices((1, 2, 3), (6, 3, 1))[0]):
        data = rng.choice(MUTATIONS)(data, rng)
    return data


class Unparseable(Exception):
    pass


def parse_responses(data: bytes) -> list[int]:
    """The statuses of the HTTP/1.1 responses in ``data``; Unparseable if it is not a
    sequence of whole responses (an unfinished one is accepted only as the last, when
    the server stops sending to a client that has not finished its request...)."""
    statuses = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise Unparseable(f"headers without an end: {head[:80]!r}")
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or status_line[0] != b"HTTP/1.1" or not status_line[1].isdigit():
            raise Unparseable(f"bad status line {lines[0][:80]!r}")
        status = int(status_line[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise Unparseable(f"bad header line {line[:80]!r}")
            headers[name.lower()] = value.strip()
        statuses.append(status)
        if status < 200 or status in (204, 304):
            continue
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size_line, sep, data = data.partition(b"\r\n")
                if not sep:
                    raise Unparseable("chunked body cut off")
                size = int(size_line.split(b";")[0], 16)
                if len(data) < size + 2 or data[size : size + 2] != b"\r\n":
                    raise Unparseable("chunk cut off")
                data = data[size + 2 :]
                if size == 0:
                    break
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if len(data) < length:
                # HEAD: a Content-Length and no body; nothing else may follow it.
                if data:
                    raise Unparseable(f"body cut off ({len(data)} of {length} bytes)")
            data = data[length:]
    return statuses


async def _exchange(port: int, payload: bytes, silence: float) -> tuple[bytes, bool]:
    """Write ``payload``; read until the server closes or says nothing for ``silence``
    seconds. (data, closed by the server)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, closed = b"", False
    try:
        writer.write(payload)
        await writer.drain()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), silence)
            if not chunk:
                closed = True
                break
            data += chunk
    except TimeoutError:
        pass
    except (ConnectionError, OSError):
        closed = True
    finally:
        writer.close()
    return data, closed


PROBE = b"GET /async HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def _probe(port: int) -> bool:
    data, _ = await _exchange(port, PROBE, 10)
    return data.startswith(b"HTTP/1.1 200")


async def _fuzz(args: argparse.Namespace, port: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    unparseable: list[dict[str, str]] = []
    surprising: list[str] = []  # 500s that no view raised
    probes_failed = 0
    limit = asyncio.Semaphore(args.concurrency)

    async def one(payload: bytes) -> None:
        async with limit:
            try:
                data, closed = await _exchange(port, payload, args.silence)
            except OSError as exc:
                outcomes[f"connect failed: {type(exc).__name__}"] += 1
                return
        try:
            statuses = parse_responses(data)
        except (Unparseable, ValueError) as exc:
            outcomes["unparseable"] += 1
            unparseable.append({"request": repr(payload[:300]), "error": str(exc)})
            return
        if not statuses:
            outcomes["no response, closed" if closed else "no response (request unfinished)"] += 1
        for status in statuses:
            outcomes[str(status)] += 1
            if status == 500 and b"/error" not in payload:
                outcomes["500 not from /error"] += 1
                surprising.append(repr(payload[:300]))

    batch = max(1, args.requests // 20)
    done = 0
    while done < args.requests:
        payloads = [make_request(rng) for _ in range(min(batch, args.requests - done))]
        await asyncio.gather(*(one(p) for p in payloads))
        done += len(payloads)
        if not await _probe(port):
            probes_failed += 1
    return {
        "outcomes": dict(sorted(outcomes.items())),
        "unparseable": unparseable[:10],
        "surprising_500s": surprising[:10],
        "probes_failed": probes_failed,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        port = free_port()
        proc = start_server(STRESS_DIR, "resource_app", port, {}, log=log)
        started = time.monotonic()
        try:
            result = asyncio.run(_fuzz(args, port))
            alive = proc.poll() is None
        finally:
            stop_server(proc)
        text = log.read_text(errors="replace")
    escaped = [
        line
        for line in text.splitlines()
        if "Exception in ASGI application" in line or "ASGI callable returned without" in line
    ]
    checks = {
        "every response parsed": result["outcomes"].get("unparseable", 0) == 0,
        "every probe answered 200": result["probes_failed"] == 0,
        "no 500 but the failing view's": result["outcomes"].get("500 not from /error", 0) == 0,
        "the server is alive": alive,
        "no exception escaped the ASGI app": not escaped,
    }
    return {
        "requests": args.requests,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        **result,
        "escaped": escaped[:10],
        "checks": checks,
        "ok": all(checks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--silence", type=float, default=0.5, help="seconds: stop reading")
    parser.add_argument("--seed", type=int, default=9)
    result = run(parser.parse_args())
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
