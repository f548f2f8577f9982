"""The end-to-end benchmark's sandbox: a minimal HTTP/1.1 receiver for the ``http`` destination.

It answers every POST at once with 200 and a JSON ``id``, and counts requests and distinct
``Idempotency-Key`` values; ``GET /count`` returns both. Lean on purpose: on a 2-core machine
the vendor sandboxes' per-request work would be measured instead of Courier's.
Usage: ``python receiver_server.py PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys

requests = 0
keys: set[bytes] = set()


def answer(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global requests
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
            headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
            await reader.readexactly(int(headers.get(b"content-length", b"0")))
            if lines[0].startswith(b"GET /count"):
                writer.write(answer(json.dumps({"requests": requests, "distinct": len(keys)}).encode()))
                continue
            requests += 1
            keys.add(headers.get(b"idempotency-key", b""))
            writer.write(answer(b'{"id": "%d"}' % requests))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
