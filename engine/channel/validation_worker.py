"""The validation worker: a child process that runs hl7apy for one channel's validation pool.

hl7apy costs ~1.5 KB of memory and ~0.1 ms per component, and cannot be interrupted inside
a thread, so it runs here, where the engine can kill it (:mod:`engine.validation_pool`).
The worker caps its own address space (``RLIMIT_AS``) and, should the engine be gone, stops
itself with ``SIGALRM`` once a validation overruns its time limit.

Protocol, one validation at a time: the engine writes a 4-byte big-endian length and the
message text in UTF-8 to stdin; the worker answers one JSON line on stdout,
``{"problems": [[code, text], ...], "retiring": bool}`` (no problems: valid; retiring: the
memory limit was reached and the worker exits). Its first line is ``ready`` once hl7apy is
loaded. End of stdin ends the worker. Nothing the worker writes quotes the message.

Run as ``python -m engine.channel.validation_worker LEVEL VERSION MEMORY_MB TIMEOUT_S``
(VERSION ``-`` for the message's own MSH-12).
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
from typing import BinaryIO

from engine.channel.validation import validate
from engine.message.ack import AckError

WARM_UP = "MSH|^~\\&|A|B|C|D|20240101||ACK|1|P|2.5\rMSA|AA|1"
"""Loads hl7apy and its schema tables before the worker says it is ready."""
READY = b"ready\n"
OUT_OF_MEMORY = "message fails validation: it needs more than the worker's memory limit"


def main(argv: list[str]) -> int:
    level, memory_mb, timeout_s = argv[0], int(argv[2]), float(argv[3])
    version = None if argv[1] == "-" else argv[1]
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything hl7apy prints goes to stderr, never into the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the engine stops us
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    validate(WARM_UP, level, version)
    answers.write(READY)
    requests = sys.stdin.buffer
    while (text := _read_request(requests)) is not None:
        signal.alarm(math.ceil(timeout_s) + 1)
        problems, exhausted = _problems(text, level, version)
        signal.alarm(0)
        answer = {"problems": [[p.code, p.text] for p in problems], "retiring": exhausted}
        answers.write(json.dumps(answer).encode() + b"\n")
        if exhausted:  # a heap that hit the limit is not reused, nor slowly freed: the pool starts afresh
            os._exit(3)
    return 0


def _problems(text: str, level: str, version: str | None) -> tuple[list[AckError], bool]:
    """The problems found, and whether the memory limit was reached."""
    try:
        return validate(text, level, version), False
    except MemoryError:
        return [AckError(207, OUT_OF_MEMORY)], True
    except Exception as exc:  # hl7apy bugs on odd input: refuse the message, keep serving
        return [AckError(207, f"message could not be validated ({type(exc).__name__})")], False


def _read_request(stream: BinaryIO) -> str | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    if len(body) < size:
        return None
    return body.decode("utf-8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
