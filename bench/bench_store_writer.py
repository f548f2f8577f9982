"""The store writer's CPU per message, SQLite against PostgreSQL, in one process and one run.

    python bench/bench_store_writer.py

``Database.receive`` in transactions of 8 (what group commit makes of 8 connections), with no
network and no reactor: the CPU time of the calling thread per message, best of 3 rounds of
1600. This is the part of bench_store.py's "CPU µs/msg" that the store's SQL and its driver
cost, measured without the machine's other load in it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store.crypto import Cipher  # noqa: E402
from engine.store.database import Database  # noqa: E402
from tests.support.postgres import PostgresServer, server_binaries  # noqa: E402
from tests.test_store_database import RAW, incoming  # noqa: E402

MESSAGES, BATCH, ROUNDS = 1600, 8, 3


def writer_cpu_us(location: str) -> float:
    db = Database.open(location, Cipher(os.urandom(32)))
    try:
        rounds = []
        for run in range(ROUNDS):
            started = time.thread_time()
            for first in range(0, MESSAGES, BATCH):
                with db.transaction():
                    for i in range(first, first + BATCH):
                        control_id = f"R{run}X{i}"
                        raw = RAW.replace(b"|C1|", f"|{control_id}|".encode())
                        db.receive(incoming(control_id=control_id, raw=raw))
            rounds.append((time.thread_time() - started) / MESSAGES * 1e6)
        return min(rounds)
    finally:
        db.close()


def main() -> int:
    binaries = server_binaries()
    if binaries is None:
        print("bench_store_writer: PostgreSQL server binaries (initdb, pg_ctl) not found", file=sys.stderr)
        return 2
    postgres = PostgresServer(binaries)
    try:
        postgres.start()
        with tempfile.TemporaryDirectory(prefix="courier-bench-") as tmp:
            sqlite = writer_cpu_us(str(Path(tmp) / "writer.sqlite3"))
        pg = writer_cpu_us(postgres.create_database())
    finally:
        postgres.stop()
    print(f"\nwriter CPU µs/msg, transactions of {BATCH}, best of {ROUNDS}:", end=" ")
    print(f"SQLite full {sqlite:.0f}, PostgreSQL {pg:.0f} (+{pg - sqlite:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
