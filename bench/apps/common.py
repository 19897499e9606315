"""What every benchmark app shares: the template data, the upstream address, the clients.

Each app in this folder serves the same routes with the same behaviour:

* ``GET /hello``          -> ``Hello, World!``
* ``GET /sleep``          -> waits 50 ms (``await asyncio.sleep``; ``time.sleep`` in sync Flask)
* ``POST /echo``          -> parses the JSON body and returns it as JSON
* ``GET /fanout``         -> 5 concurrent GETs to the upstream through one shared client
  (``?client=httpx``, the default, or ``?client=aiohttp``), combined JSON out
* ``GET /fanout-aiohttp`` -> the same with the shared aiohttp session
* ``GET /template``       -> renders ``templates/table.html`` with a 50-row table

The fanout routes exist only in the async apps that can keep a client alive between
requests (flask-asgi, Quart, Starlette, bare ASGI).
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"

SLEEP_SECONDS = 0.05
#: GET /wait (flask-asgi, Quart, Starlette): bench/memory.py holds requests waiting this long.
WAIT_SECONDS = float(os.environ.get("BENCH_WAIT", "10"))
HELLO = "Hello, World!"

#: The upstream server of the fanout workload (bench/upstream.py).
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9100")
FANOUT = 5
FANOUT_URLS = [f"{UPSTREAM}/item/{i}" for i in range(FANOUT)]

#: Both clients get the same pool, all connections kept alive. 500 = 100 concurrent
#: requests x 5 calls: every in-flight call has a connection, so the pool never queues and
#: the server's CPU, not the pool limit, bounds throughput. (With the clients' default
#: limit of 100, every candidate ties at ~5000 upstream calls/s = 100 / 20 ms.)
POOL_SIZE = int(os.environ.get("BENCH_POOL", "500"))

ROWS = [
    {
        "id": i,
        "name": f"Item <{i}> & co",  # something to escape
        "email": f"user{i}@example.org",
        "score": (i * 37) % 101 / 7,
        "active": i % 3 != 0,
    }
    for i in range(50)
]


def make_httpx_client():  # type: ignore[no-untyped-def]
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
        timeout=httpx.Timeout(10.0),
    )


def make_aiohttp_session():  # type: ignore[no-untyped-def]
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=10.0),
    )


async def fanout_httpx(client) -> dict:  # type: ignore[no-untyped-def,type-arg]
    import asyncio

    async def one(url: str):  # type: ignore[no-untyped-def]
        response = await client.get(url)
        response.raise_for_status()
        return response.json()

    return {"results": await asyncio.gather(*(one(url) for url in FANOUT_URLS))}


async def fanout_aiohttp(session) -> dict:  # type: ignore[no-untyped-def,type-arg]
    import asyncio

    async def one(url: str):  # type: ignore[no-untyped-def]
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.json()

    return {"results": await asyncio.gather(*(one(url) for url in FANOUT_URLS))}
