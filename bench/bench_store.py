"""Store benchmark: MLLP → store → ACK on SQLite and on PostgreSQL, side by side, in one run.

    python bench/bench_store.py [--quick] [--repeat N]

``courier run`` receives a ~2 KB ORU^R01 over one connection (ping-pong) and over 8, with its
delivery queue held so only the receiving path is measured (see bench_listener.py, whose
client and channel this uses). The baseline is SQLite at ``durability=full`` (fsync every
commit); against it run one node and two nodes (two ``courier run --node-name a|b`` on one
database, the connections spread over both listeners; one connection goes to node a) on a
throwaway PostgreSQL server started for the run from the installed binaries
(``initdb``/``pg_ctl``, default settings: ``synchronous_commit = on``, ``fsync = on``),
reached over its unix socket. Each figure is also shown as a share of SQLite full at the
same number of connections. The goal: PostgreSQL with one node at 8 connections reaches at
least 50 % of SQLite full at 8 connections.

For 8 connections the run also shows where the CPU went (each Courier process, PostgreSQL's
server processes, the client) and how many of the machine's cores were busy, from /proc.

End to end, the same three set-ups run with their queue not held: an ``http`` destination
posts each message to a lean local receiver (``receiver_server.py``) that answers at once;
the figures are the messages received per second (first frame → last ACK) and the
deliveries completed per second (first frame → the receiver has every idempotency key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_listener import (  # noqa: E402
    Figures,
    batches,
    cpu_seconds,
    drive,
    free_port,
    median,
    spread,
    start_courier,
    wait_for_port,
)
from messages import small_oru  # noqa: E402

from tests.support.postgres import PostgresServer, server_binaries  # noqa: E402

SCENARIOS = [("1 conn, 2 KB", 1, 2000), ("8 conns, 2 KB", 8, 500)]
BASELINE = "sqlite full, 1 node"
SERVERS = {BASELINE: 1, "postgresql on, 1 node": 1, "postgresql on, 2 nodes": 2}  # name: nodes
GOAL = ("postgresql on, 1 node", "8 conns, 2 KB", 0.5)
CPU_SCENARIO = "8 conns, 2 KB"
E2E_CONNECTIONS, E2E_PER_CONNECTION = 8, 250

HOOK_CHANNEL = """
name = "bench-e2e"
[source]
listen = "tcp:{{port}}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "hook"
type = "http"
mapping = "bench_hook.toml"
concurrency = 4
  [destinations.settings]
  url = "http://127.0.0.1:{receiver}/in"
"""

HOOK_MAPPING = """
input = ["ORU^R01"]
output = "http"
[fields]
id = "MSH-10"
test = { template = "{OBR-4.2}" }
value = { template = "{OBX-5} {OBX-6.1}" }
"""


@dataclass
class CpuShare:
    """CPU seconds per process group over one scenario, and the machine's busy cores."""

    seconds: dict[str, float]
    busy_cores: float


@dataclass
class EndToEnd:
    received: float  # messages/s, first frame → last ACK
    delivered: float  # deliveries/s, first frame → every key at the receiver


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
    shares: dict[str, list[CpuShare]] = {}
    e2e: dict[str, list[EndToEnd]] = {}
    load_before = os.getloadavg()
    postgres = PostgresServer(binaries)  # default settings: synchronous_commit and fsync on
    try:
        postgres.start()
        with tempfile.TemporaryDirectory(prefix="courier-bench-") as tmp:
            for _ in range(args.repeat):
                for server, nodes in SERVERS.items():
                    store = postgres.create_database if server.startswith("postgresql") else None
                    figures, share = run_server(nodes, Path(tmp), scale, store, postgres)
                    for name, f in figures.items():
                        runs.setdefault((server, name), []).append(f)
                    shares.setdefault(server, []).append(share)
                for server, nodes in SERVERS.items():
                    store = postgres.create_database if server.startswith("postgresql") else None
                    e2e.setdefault(server, []).append(run_end_to_end(nodes, Path(tmp), scale, store))
    finally:
        postgres.stop()
    print(f"\nLoad average before the run: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}")
    status = print_table({key: median(figures) for key, figures in runs.items()}, args.repeat)
    print_cpu({server: median_share(s) for server, s in shares.items()})
    print_end_to_end({server: median_e2e(r) for server, r in e2e.items()})
    return status


def start_nodes(
    nodes: int, workdir: Path, store: str | None, channel: str | None = None
) -> tuple[list[int], list[subprocess.Popen]]:
    """``nodes`` Courier processes on one store (named a, b, … when more than one)."""
    ports = [free_port() for _ in range(nodes)]
    extra = {} if channel is None else {"channel": channel, "hold": False}
    processes = [
        start_courier(port, workdir, "full", store, node=chr(ord("a") + i) if nodes > 1 else None, **extra)
        for i, port in enumerate(ports)
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_for_port(port, process)
    except BaseException:
        stop(processes)
        raise
    return ports, processes


def stop(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(10)


def run_server(
    nodes: int, workdir: Path, scale: float, new_database: Callable[[], str] | None, postgres: PostgresServer
) -> tuple[dict[str, Figures], CpuShare]:
    """Start the nodes on a fresh store, drive every scenario against them, stop them."""
    ports, processes = start_nodes(nodes, workdir, new_database() if new_database else None)
    pids = [p.pid for p in processes]
    results = {}
    try:
        for name, connections, per_connection in SCENARIOS:
            count = max(30, int(per_connection * scale))
            groups = {f"courier {chr(ord('a') + i)}": [pid] for i, pid in enumerate(pids)}
            if new_database is not None:
                groups["postgresql server"] = server_pids(postgres)
            groups["client"] = [os.getpid()]
            before = sample(groups)
            results[name] = asyncio.run(drive(ports, pids, small_oru, connections, count, check_msa2=True))
            if name == CPU_SCENARIO:
                share = difference(before, sample(groups))
    finally:
        stop(processes)
    return results, share


def server_pids(postgres: PostgresServer) -> list[int]:
    """The postmaster and its children (one backend per connection, the WAL writer, …)."""
    postmaster = int((postgres.root / "data" / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def machine_cpu() -> tuple[float, float]:
    """Busy and total jiffies of all cores together (iowait counts as idle)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def sample(groups: dict[str, list[int]]) -> tuple[float, dict[str, float], tuple[float, float]]:
    return (
        time.perf_counter(),
        {name: sum(cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in groups.items()},
        machine_cpu(),
    )


def difference(before, after) -> CpuShare:
    elapsed = after[0] - before[0]
    busy = (after[2][0] - before[2][0]) / (after[2][1] - before[2][1]) * (os.cpu_count() or 1)
    seconds = {name: (after[1][name] - before[1][name]) / elapsed for name in before[1]}
    return CpuShare(seconds, busy)


def median_share(shares: list[CpuShare]) -> CpuShare:
    names = shares[0].seconds
    return CpuShare(
        {name: statistics.median(s.seconds[name] for s in shares) for name in names},
        statistics.median(s.busy_cores for s in shares),
    )


def run_end_to_end(
    nodes: int, workdir: Path, scale: float, new_database: Callable[[], str] | None
) -> EndToEnd:
    """Send every message and wait for every ACK, then for every delivery at the receiver."""
    receiver_port = free_port()
    command = [sys.executable, str(HERE / "receiver_server.py"), str(receiver_port)]
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        receiver.stdout.readline()  # "ready"
        (workdir / "bench_hook.toml").write_text(HOOK_MAPPING)
        channel = HOOK_CHANNEL.format(receiver=receiver_port)
        ports, processes = start_nodes(nodes, workdir, new_database() if new_database else None, channel)
        try:
            total = E2E_CONNECTIONS * max(10, int(E2E_PER_CONNECTION * scale))
            work = batches(small_oru, "E", E2E_CONNECTIONS, total // E2E_CONNECTIONS)
            started = time.perf_counter()
            asyncio.run(spread(ports, work, [], True))
            last_ack = time.perf_counter()
            while (count := received(receiver_port))["distinct"] < total:
                if time.perf_counter() - started > 600:
                    raise RuntimeError(f"only {count['distinct']} of {total} delivered after 10 minutes")
                time.sleep(0.05)
            done = time.perf_counter()
        finally:
            stop(processes)
    finally:
        receiver.terminate()
        receiver.wait(10)
    return EndToEnd(total / (last_ack - started), total / (done - started))


def received(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as response:
        return json.loads(response.read())


def median_e2e(runs: list[EndToEnd]) -> EndToEnd:
    return EndToEnd(statistics.median(r.received for r in runs), statistics.median(r.delivered for r in runs))


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
    print("CPU µs/msg: every Courier process's CPU time (all threads) per message, from /proc;")
    print("PostgreSQL's own processes are not counted. Every ACK was checked (MSA-1 AA, MSA-2).")
    return 0


def print_cpu(shares: dict[str, CpuShare]) -> None:
    print(f"\nWhere the CPU went at {CPU_SCENARIO} (cores used: CPU seconds per second of the scenario)")
    for server, share in shares.items():
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in share.seconds.items())
        print(f"{server:24} {parts}; machine busy {share.busy_cores:.2f} of {os.cpu_count()} cores")


def print_end_to_end(results: dict[str, EndToEnd]) -> None:
    print(f"\nEnd to end, {E2E_CONNECTIONS} connections, an http destination to a local receiver:")
    print(f"{'store':24} {'received msgs/s':>16} {'delivered/s':>12} {'of sqlite full':>15}")
    for server, r in results.items():
        share = r.delivered / results[BASELINE].delivered
        print(f"{server:24} {r.received:16.0f} {r.delivered:12.0f} {share:14.0%}")
    print("Every ACK was checked; every message's idempotency key reached the receiver.")


if __name__ == "__main__":
    raise SystemExit(main())
