"""The fanout workload's upstream: a raw asyncio HTTP/1.1 server that answers every
request after 20 ms with a small JSON body, keeping connections alive.

``python upstream.py --port 9100``. It runs on uvloop when available and is meant to be
pinned to the load generator's CPU, away from the server under test. Requests are GETs
without a body; responses are identical, so their order on a connection does not matter.
"""

from __future__ import annotations

import argparse
import asyncio

DELAY = 0.020
BODY = b'{"ok":true,"delay_ms":20}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            self.loop.call_later(DELAY, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
