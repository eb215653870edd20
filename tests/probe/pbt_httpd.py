"""A tiny HTTP server for probe fixtures (run inside a pod namespace with ``ip netns exec``).

Listens on ``--port`` on all addresses and on each ``--local-port`` on 127.0.0.1 only (a "sidecar
container" reachable only through localhost). ``GET /fail`` answers 500, everything else 200 with
``pbt-ok NAME``. Exits by itself after ``--lifetime`` seconds. Prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def serve(name: str, port: int, local_ports: list[int], lifetime: float) -> None:
    body_ok = f"pbt-ok {name}\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            for _ in range(100):
                header = await asyncio.wait_for(reader.readline(), 5)
                if header in (b"\r\n", b"\n", b""):
                    break
            parts = line.split()
            status, body = (500, b"fail\n") if len(parts) > 1 and parts[1] == b"/fail" else (200, body_ok)
            reason = b"OK" if status == 200 else b"Internal Server Error"
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (status, reason, len(body), body)
            )
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "0.0.0.0", port, backlog=1024)]
    for lp in local_ports:
        servers.append(await asyncio.start_server(handle, "127.0.0.1", lp, backlog=256))
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
