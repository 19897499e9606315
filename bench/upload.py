"""Large uploads: a sync view against an async one (issue 9: sync within 1.5x async).

    python bench/upload.py [--mib 20] [--rounds 10]

Serves bench/apps/upload_app.py with uvicorn in a subprocess (loopback) and POSTs the same
body to each view in turn, printing the median and range of the wall times.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(HERE / "apps"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "upload_app:asgi",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    body = b"x" * (args.mib * 1024 * 1024)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        times: dict[str, list[float]] = {"sync": [], "async": []}
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(args.rounds):
                for kind in times:
                    started = time.perf_counter()
                    response = client.post("/" + kind, content=body)
                    times[kind].append(time.perf_counter() - started)
                    assert response.text == str(len(body)), response.text
        for kind, values in times.items():
            print(
                f"{kind:5} {args.mib} MiB upload: median {statistics.median(values):.3f} s"
                f" (min {min(values):.3f}, max {max(values):.3f}, {args.rounds} rounds)"
            )
        ratio = statistics.median(times["sync"]) / statistics.median(times["async"])
        print(f"sync / async: {ratio:.2f}x")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
