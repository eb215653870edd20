"""A tiny, cheap HTTP server for probe fixtures (run inside a pod namespace with ``ip netns exec``).

Listens on ``--port`` on all addresses and on each ``--local-port`` on 127.0.0.1 only (a "sidecar
container" reachable only through localhost). ``GET /fail`` answers 500, everything else 200 with
``pbt-ok NAME``. Exits by itself after ``--lifetime`` seconds. Prints ``ready`` once listening.
A bare ``asyncio.Protocol`` (no task or streams per connection): thirty of these share two CPUs in
the benchmark, and a real pod would serve from something much cheaper than Python streams.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

MAX_REQUEST = 65536


def response(status: int, reason: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, reason, len(body), body)
    )


class Http(asyncio.Protocol):
    ok = b""
    fail = response(500, b"Internal Server Error", b"fail\n")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf or len(self.buf) > MAX_REQUEST:
            parts = self.buf.split(b" ", 2)
            self.transport.write(self.fail if len(parts) > 1 and parts[1] == b"/fail" else self.ok)
            self.transport.close()


async def serve(name: str, port: int, local_ports: list[int], lifetime: float) -> None:
    Http.ok = response(200, b"OK", f"pbt-ok {name}\n".encode())
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Http, "0.0.0.0", port, backlog=1024)]
    for lp in local_ports:
        servers.append(await loop.create_server(Http, "127.0.0.1", lp, backlog=256))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.sleep(lifetime)
    for s in servers:
        s.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--local-port", type=int, action="append", default=[])
    p.add_argument("--lifetime", type=float, default=300.0)
    a = p.parse_args()
    asyncio.run(serve(a.name, a.port, a.local_port, min(a.lifetime, 3600.0)))


if __name__ == "__main__":
    main()
