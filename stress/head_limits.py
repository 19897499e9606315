"""Huge request heads, left unfinished, on N connections at once, per server.

Each connection sends a request line and then up to ``--mib`` MiB of 1 KiB header lines
without the blank line that ends a head, and holds on. A server with a head limit (64 KiB
under ``flask serve``) answers 431 (uvicorn's h11: 400) and closes each connection once
past it; one without buffers all it is sent (measured before the limits: uvicorn with
httptools, 10 connections of 50 MiB, 42 -> 554 MiB). Then one complete request with
``--count`` tiny headers (``a: b``). Prints one JSON line per server: RSS before and while
the connections are held, MiB each connection got to send, the answers.

    python stress/head_limits.py [--connections 10] [--mib 50] [--count 200000] [--servers ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import for_each_server, tree_rss_mib  # noqa: E402

LINE = b"X-Big: " + b"a" * 1015 + b"\r\n"  # 1 KiB
BATCH = LINE * 256  # 256 KiB per send


def answer(sock: socket.socket, timeout: float = 5.0) -> str:
    """The status the server answered with, "closed" without one, "none" if silent."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n" in received:
                break
    except TimeoutError:
        return "none"
    except OSError:
        pass
    return received[9:12].decode() if received.startswith(b"HTTP/1.1 ") else "closed"


def huge_heads(port: int, pid: int, connections: int, mib: float) -> dict[str, Any]:
    sockets, sent = [], []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sockets.append(sock)
        total = 0
        try:
            sock.sendall(b"GET /async HTTP/1.1\r\nHost: x\r\n")
            while total < mib * 2**20:
                sock.sendall(BATCH)
                total += len(BATCH)
        except OSError:
            pass  # refused and closed, or the server stopped reading (timeout)
        sent.append(round(total / 2**20, 2))
    time.sleep(1.0)
    held = tree_rss_mib(pid)
    answers = Counter(answer(sock, 1.0) for sock in sockets)
    for sock in sockets:
        sock.close()
    return {"rss_held_mib": held, "mib_sent_each": sorted(set(sent)), "answers": dict(answers)}


def many_headers(port: int, count: int) -> str:
    head = b"GET /async HTTP/1.1\r\nHost: x\r\n" + b"a: b\r\n" * count + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass
        return answer(sock, 10.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--mib", type=float, default=50.0)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--servers", default="uvicorn,granian,hypercorn")
    args = parser.parse_args()
    connections = max(1, min(args.connections, 100))  # bounded
    mib = max(0.1, min(args.mib, 100.0))
    count = max(1, min(args.count, 1_000_000))
    failed = False

    def measure(port: int, pid: int) -> dict[str, Any]:
        result = huge_heads(port, pid, connections, mib)
        return {**result, "many_headers": many_headers(port, count)}

    for server, before, result in for_each_server(args.servers, measure):
        print(json.dumps({"server": server, "rss_before_mib": before, **result}), flush=True)
        failed |= result["rss_held_mib"] - before > 50 or result["many_headers"] == "200"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
