"""Where the memory of a waiting request goes, in process: ``python bench/memory_inprocess.py``.

N requests (2,000) to an async view that waits on an event are held in flight on one uvloop
loop, called through flask-asgi's ASGI callable with no server (bench/memory.py measures the
whole server). A tracemalloc snapshot diff, divided by N, lists the allocations each
waiting request holds, largest first, by source line (``--traceback`` for the call chains);
the RSS growth also counts what tracemalloc cannot see (each greenlet's frame data stack).
The scope dicts and the receive/send stubs are the server's in real life. Bounded: ~10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from typing import Any

import uvloop
from flask import Flask

from flask_asgi import ASGI

app = Flask(__name__)
release = asyncio.Event()


@app.get("/wait")
async def wait() -> str:
    await release.wait()
    return "OK"


asgi = ASGI(app)


def scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/wait", "raw_path": b"/wait", "query_string": b"",
        "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    }  # fmt: skip


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def hold(count: int) -> list[asyncio.Future[None]]:
    """Start ``count`` requests and let them all reach their wait (and the watch schedule)."""
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    release.clear()
    tasks = [asyncio.ensure_future(asgi(scope(), receive, send)) for _ in range(count)]
    await asyncio.sleep(0.6)  # past the disconnect-watch tick (0.25-0.5 s)
    return tasks


async def main(args: argparse.Namespace) -> None:
    n = args.requests
    tasks = await hold(200)  # warm up (imports, caches), as bench/memory.py does
    release.set()
    await asyncio.gather(*tasks)
    del tasks
    gc.collect()
    rss_before = rss_kib()  # untraced: tracemalloc's own bookkeeping would count
    tasks = await hold(n)
    gc.collect()
    rss_each = (rss_kib() - rss_before) / n
    release.set()
    await asyncio.gather(*tasks)
    del tasks
    gc.collect()
    tracemalloc.start(args.depth)
    before = tracemalloc.take_snapshot()
    tasks = await hold(n)
    gc.collect()
    after = tracemalloc.take_snapshot()
    release.set()
    await asyncio.gather(*tasks)
    stats = after.compare_to(before, "traceback" if args.traceback else "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"{n} requests waiting: RSS {rss_each:.2f} KiB each,"
          f" tracemalloc {total / n:,.0f} B each\n")  # fmt: skip
    for stat in stats[: args.top]:
        size, blocks = stat.size_diff / n, stat.count_diff / n
        print(f"{size:7.0f} B {blocks:5.1f} blocks  {stat.traceback[-1]}")
        if args.traceback:
            for line in stat.traceback.format()[-args.depth * 2 :]:
                print("        ", line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--depth", type=int, default=1, help="frames kept per allocation")
    parser.add_argument("--traceback", action="store_true")
    uvloop.run(main(parser.parse_args()))
