"""The receiving path's CPU cost, stage by stage, without sockets or threads.

    python bench/bench_pipeline.py [--profile]

Reactor side: the benchmark channel of ``bench_listener.py`` (filter, KPN mapping dry-run),
run through the real :class:`engine.source.Source` with a store that answers at once, so the
figures are what the reactor thread spends per message. Store side: ``Database.receive`` and
its COMMIT on a real SQLite file at each durability, one message per transaction (one
connection's worst case), split by statement, beside what the floor (``floor_server.py``)
commits for the same message. CPU-time figures move less than the end-to-end benchmark when the
machine is busy; run both before and after a change.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run without installing

from bench_listener import CHANNEL, MAPPING  # noqa: E402
from messages import large_oru, small_oru  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from engine.channel.check import load_channels  # noqa: E402
from engine.message import Message  # noqa: E402
from engine.service import build_source, routes  # noqa: E402
from engine.source import ACCEPT, Source, _Answer  # noqa: E402
from engine.store.base import Incoming, Receipt  # noqa: E402
from engine.store.crypto import Cipher  # noqa: E402
from engine.store.database import Database  # noqa: E402

KEY = b"benchmark-key-not-a-secret-32byt"


class AnsweringStore:
    """Stores nothing: every message is new, so the reactor-side cost is all that is left."""

    def receive(self, incoming: Incoming) -> defer.Deferred[Receipt]:
        return defer.succeed(Receipt(1, False, incoming.ack_code))


def bench_source(workdir: Path) -> Source:
    (workdir / "bench.toml").write_text(CHANNEL.format(port=9))
    (workdir / "bench_kpn.toml").write_text(MAPPING)
    channel = load_channels([workdir / "bench.toml"])[0]
    clock = task.Clock()
    return build_source(clock, channel, AnsweringStore(), routes(channel, clock.seconds))


def reactor_stages(source: Source, frames: list[bytes]) -> dict[str, float]:
    """µs per message for each step ``handle_frame`` takes, each on a freshly parsed message."""
    spent = dict.fromkeys(["parse", "screen", "incoming", "ack", "handle_frame"], 0.0)
    clock = time.perf_counter
    for payload in frames:
        t0 = clock()
        message = source._parse(payload)
        t1 = clock()
        accepted = source.check(message)
        t2 = clock()
        source._incoming(message, payload, "127.0.0.1:1", accepted)
        t3 = clock()
        source._answer(message, _Answer(ACCEPT, None, committed=True, code="AA"))
        t4 = clock()
        replies: list[object] = []
        source.handle_frame(payload, "127.0.0.1:1").addCallback(replies.append)
        t5 = clock()
        assert replies, "the answering store fires at once"
        for stage, started, ended in (
            ("parse", t0, t1),
            ("screen", t1, t2),
            ("incoming", t2, t3),
            ("ack", t3, t4),
            ("handle_frame", t4, t5),
        ):
            spent[stage] += ended - started
    return {stage: total / len(frames) * 1e6 for stage, total in spent.items()}


class TimedConnection:
    """A SQLite connection that adds up the time of each kind of statement (BEGIN, the
    duplicate lookup, each INSERT, COMMIT): where the store's share of a message goes."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.spent: dict[str, float] = {}

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        started = time.perf_counter()
        try:
            return self._connection.execute(sql, *args)
        finally:
            words = sql.split()
            kind = " ".join(words[:3]) if words[0] == "INSERT" else words[0]
            self.spent[kind] = self.spent.get(kind, 0.0) + time.perf_counter() - started

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)


def store_commit(workdir: Path, durability: str, frames: list[bytes], source: Source) -> dict[str, float]:
    """µs per message for ``Database.receive`` and its COMMIT, one message per transaction,
    split by statement; "Python" is the rest (keyed hash, encryption, building rows)."""
    db = Database.open(workdir / f"bench-{durability}.sqlite3", Cipher(KEY), durability=durability)
    incoming = []
    for payload in frames:
        message = Message.parse(payload)
        incoming.append(source._incoming(message, payload, "127.0.0.1:1", source.check(message)))
    db.connection = timed = TimedConnection(db.connection)
    started = time.perf_counter()
    for item in incoming:
        with db.transaction():
            db.receive(item)
    elapsed = time.perf_counter() - started
    db.close()
    split = {kind: spent / len(frames) * 1e6 for kind, spent in timed.spent.items()}
    split["Python"] = elapsed / len(frames) * 1e6 - sum(split.values())
    split["total"] = elapsed / len(frames) * 1e6
    return split


def floor_commit(workdir: Path, durability: str, frames: list[bytes]) -> float:
    """µs per message for what the floor (``floor_server.py``) stores: one INSERT of the raw
    bytes into a table without indexes, and its COMMIT, one message per transaction."""
    db = sqlite3.connect(workdir / f"floor-{durability}.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {durability}")
    db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, raw BLOB)")
    started = time.perf_counter()
    for payload in frames:
        db.execute("BEGIN")
        db.execute("INSERT INTO messages (raw) VALUES (?)", (payload,))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed / len(frames) * 1e6


def frames_of(make: Callable[[str], bytes], prefix: str, count: int) -> list[bytes]:
    return [make(f"{prefix}{time.monotonic_ns() % 10**6:06d}{i:06d}") for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="cProfile handle_frame on 2 KB messages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="courier-pipeline-") as tmp:
        workdir = Path(tmp)
        source = bench_source(workdir)
        sizes = [("2 KB", small_oru, 3000), ("200 KB", large_oru, 200)]
        for label, make, count in sizes:
            reactor_stages(source, frames_of(make, "W", count // 10))  # warm caches
            stages = reactor_stages(source, frames_of(make, "R", count))
            print(f"\n{label} ORU^R01, reactor thread, µs per message (best of 3 runs):")
            for _ in range(2):
                again = reactor_stages(source, frames_of(make, "R", count))
                stages = {stage: min(stages[stage], again[stage]) for stage in stages}
            for stage, micros in stages.items():
                print(f"  {stage:22} {micros:8.1f}")
            print(f"{label} ORU^R01, store, µs per message (receive + COMMIT), beside the floor's commit:")
            for durability in ("normal", "full"):
                split = store_commit(workdir, durability, frames_of(make, "S", count), source)
                floor = floor_commit(workdir, durability, frames_of(make, "F", count))
                print(f"  {durability:22} {split.pop('total'):8.1f}   floor {floor:8.1f}")
                for kind, micros in sorted(split.items(), key=lambda item: -item[1]):
                    print(f"    {kind:20} {micros:8.1f}")
        if args.profile:
            frames = frames_of(small_oru, "P", 3000)
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [source.handle_frame(f, "127.0.0.1:1") for f in frames])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
