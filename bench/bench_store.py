"""Store benchmark: MLLP → store → ACK on SQLite and on PostgreSQL, side by side, in one run.

    python bench/bench_store.py [--quick] [--repeat N]

``courier run`` receives a ~2 KB ORU^R01 over one connection (ping-pong) and over 8, with its
delivery queue held so only the receiving path is measured (see bench_listener.py, whose
client and channel this uses). The baseline is SQLite at ``durability=full`` (fsync every
commit); against it runs one node on a throwaway PostgreSQL server started for the run from
the installed binaries (``initdb``/``pg_ctl``, default settings: ``synchronous_commit = on``,
``fsync = on``), reached over its unix socket. Each figure is also shown as a share of
SQLite full at the same number of connections. The goal: PostgreSQL with one node at 8
connections reaches at least 50 % of SQLite full at 8 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_listener import Figures, drive, free_port, median, start_courier, wait_for_port  # noqa: E402
from messages import small_oru  # noqa: E402

from tests.support.postgres import PostgresServer, server_binaries  # noqa: E402

SCENARIOS = [("1 conn, 2 KB", 1, 2000), ("8 conns, 2 KB", 8, 500)]
BASELINE = "sqlite full, 1 node"
SERVERS = [BASELINE, "postgresql on, 1 node"]
GOAL = ("postgresql on, 1 node", "8 conns, 2 KB", 0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages (a smoke run)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run N times, print medians")
    args = parser.parse_args()
    binaries = server_binaries()
    if binaries is None:
        print("bench_store: PostgreSQL server binaries (initdb, pg_ctl) not found", file=sys.stderr)
        return 2
    scale = 0.1 if args.quick else 1.0
    runs: dict[tuple[str, str], list[Figures]] = {}
    postgres = PostgresServer(binaries)  # default settings: synchronous_commit and fsync on
    try:
        postgres.start()
        with tempfile.TemporaryDirectory(prefix="courier-bench-") as tmp:
            for _ in range(args.repeat):
                for server in SERVERS:
                    store = postgres.create_database if server.startswith("postgresql") else None
                    for key, figures in run_server(server, Path(tmp), scale, store).items():
                        runs.setdefault(key, []).append(figures)
    finally:
        postgres.stop()
    return print_table({key: median(figures) for key, figures in runs.items()}, args.repeat)


def run_server(
    server: str, workdir: Path, scale: float, new_database: Callable[[], str] | None
) -> dict[tuple[str, str], Figures]:
    """Start one Courier on a fresh store, drive every scenario against it, stop it."""
    port = free_port()
    process = start_courier(port, workdir, "full", new_database() if new_database else None)
    results = {}
    try:
        wait_for_port(port, process)
        for name, connections, per_connection in SCENARIOS:
            count = max(30, int(per_connection * scale))
            results[(server, name)] = asyncio.run(
                drive(port, process.pid, small_oru, connections, count, check_msa2=True)
            )
    finally:
        process.terminate()
        process.wait(10)
    return results


def print_table(results: dict[tuple[str, str], Figures], repeat: int) -> int:
    print(
        f"\n{'scenario':15} {'store':24} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/msg':>11}"
        f" {'of sqlite full':>15}"
    )
    for name, *_ in SCENARIOS:
        baseline = results[(BASELINE, name)].rate
        for server in SERVERS:
            f = results[(server, name)]
            cpu = "-" if f.cpu_us is None else f"{f.cpu_us:.0f}"
            print(
                f"{name:15} {server:24} {f.rate:8.0f} {f.p50_ms:8.3f} {f.p99_ms:8.3f} {cpu:>11}"
                f" {f.rate / baseline:14.0%}"
            )
    if repeat > 1:
        print(f"\nMedians of {repeat} runs.")
    server, scenario, goal = GOAL
    share = results[(server, scenario)].rate / results[(BASELINE, scenario)].rate
    print(f"\nGoal: {server} at {scenario} ≥ {goal:.0%} of {BASELINE}: {share:.0%}", end=" ")
    print("(met)" if share >= goal else "(NOT met)")
    print("CPU µs/msg: the Courier process's CPU time (every thread) per message, from /proc;")
    print("PostgreSQL's own processes are not counted. Every ACK was checked (MSA-1 AA, MSA-2).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
