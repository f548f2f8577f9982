"""What hl7apy validation costs per message and per KB: off, tolerant and strict, same run.

Run from the repository root: ``python bench/bench_validation.py [--quick]``. Each message
goes through a real :class:`engine.validation_pool.ValidationPool` (a fresh worker process
per message and level, so its peak memory is that message's alone), the way a channel with
``[source.validation]`` runs it: the time is the round trip as the engine waits for it, the
memory is the worker's peak resident size above its idle size. ``off`` is the engine without
validation: no worker, nothing to wait for.

The typical messages are the benchmark ORU^R01s (2 KB, and 200 KB with a base64 PDF); the
worst case is an NTE of nothing but ``^``, where every byte is a component for hl7apy.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run without installing

from twisted.internet import defer, task  # noqa: E402

from bench.messages import large_oru, small_oru  # noqa: E402
from engine.channel.config import VALIDATION, Validation  # noqa: E402
from engine.channel.validation import ceiling_refusal, components  # noqa: E402
from engine.message import Message  # noqa: E402
from engine.spec import parse  # noqa: E402
from engine.validation_pool import ValidationPool  # noqa: E402

UNBOUNDED = Validation(
    level="tolerant",
    version=None,
    max_bytes=1 << 30,
    max_components=1 << 30,
    timeout_s=600.0,
    memory_mb=16384,
    workers=1,
)
LEVELS = ("tolerant", "strict")
DEFAULTS, _ = parse(VALIDATION, {"level": "tolerant"}, env=None)


def carets(size: int) -> bytes:
    """The worst case: a valid ORU whose NTE holds ``size`` bytes of ``^``."""
    return small_oru("CARETS") + b"NTE|1||" + b"^" * size + b"\r"


def messages(quick: bool) -> list[tuple[str, bytes, int]]:
    """(name, message, repetitions)."""
    dense = [10_000] if quick else [10_000, 50_000]
    return [
        ("ORU 2 KB", small_oru("BENCH1"), 5 if quick else 20),
        ("ORU 200 KB, PDF", large_oru("BENCH2"), 2 if quick else 5),
        *((f"NTE of {size // 1000} KB of ^", carets(size), 1) for size in dense),
    ]


def memory_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LookupError(key)


@defer.inlineCallbacks
def measure(reactor, message: Message, level: str, repetitions: int):
    """(ms per message, worker peak MB above idle, what the worker answered)."""
    pool = ValidationPool(reactor, "bench", replace(UNBOUNDED, level=level))
    try:
        yield pool(Message.parse(small_oru("WARMUP")))  # start the worker, load hl7apy
        [pid] = pool.worker_pids()
        idle = memory_kb(pid, "VmRSS")
        started = time.perf_counter()
        for _ in range(repetitions):
            problems = yield pool(message)
        elapsed = (time.perf_counter() - started) / repetitions
        peak = memory_kb(pid, "VmHWM")
    finally:
        yield pool.stopService()
    return elapsed * 1000, (peak - idle) / 1024, problems


def ceiling_us(message: Message) -> float:
    """What the engine's reactor spends on the ceiling check (counting separators)."""
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        ceiling_refusal(message, 1 << 30, 1 << 30)
    return (time.perf_counter() - started) / runs * 1e6


@defer.inlineCallbacks
def refused_at_default_ceiling(reactor):
    """The 1 MB ``^`` NTE under the default limits: answered without a worker."""
    pool = ValidationPool(reactor, "bench", DEFAULTS)
    message = Message.parse(carets(1024 * 1024))
    started = time.perf_counter()
    [problem] = yield pool(message)
    elapsed = (time.perf_counter() - started) * 1000
    assert not pool.worker_pids(), "the ceiling refuses before any worker starts"
    return f"1 MB of ^ at the default limits: refused in {elapsed:.1f} ms, no worker started ({problem.text})"


@defer.inlineCallbacks
def main(reactor, quick: bool):
    print(f"{'message':<22} {'KB':>6} {'components':>10} | {'off':>5} | ", end="")
    print(" | ".join(f"{level + ' ms':>12} {'MB':>6} {'µs/KB':>7} {'KB/KB':>6}" for level in LEVELS), end="")
    print(f" | {'ceiling µs':>10}")
    for name, raw, repetitions in messages(quick):
        message = Message.parse(raw)
        kb = len(raw) / 1024
        cells = []
        for level in LEVELS:
            ms, mb, problems = yield measure(reactor, message, level, repetitions)
            refused = "*" if problems else " "
            per_kb = f"{ms * 1000 / kb:>7.0f} {mb * 1024 / kb:>6.1f}"
            cells.append(f"{ms:>11.1f}{refused} {mb:>6.1f} {per_kb}")
        print(f"{name:<22} {kb:>6.1f} {components(message):>10} | {0:>5} | ", end="")
        print(" | ".join(cells), end="")
        print(f" | {ceiling_us(message):>10.0f}")
    refusal = yield refused_at_default_ceiling(reactor)
    print(f"\n{refusal}")
    print(
        "\noff: no validation, no worker. µs/KB and KB/KB: time and worker memory per KB of"
        "\nmessage. * the level refused the message (strict: the PDF exceeds OBX-5's length)."
        "\nceiling µs: the separator count on the engine's reactor before any hand-off."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller messages (for the tests)")
    options = parser.parse_args()
    task.react(main, [options.quick])
