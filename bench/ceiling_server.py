"""The benchmark's ceiling: a minimal asyncio MLLP server that parses nothing and stores
nothing, answering every frame with the same fixed ACK. Usage: ``python ceiling_server.py PORT``."""

from __future__ import annotations

import asyncio
import sys

ACK = b"\x0bMSH|^~\\&|CEILING||||20260101||ACK^R01^ACK|1|P|2.5\rMSA|AA|0\r\x1c\r"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\x1c\r")
            writer.write(ACK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, limit=64 * 1024 * 1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
