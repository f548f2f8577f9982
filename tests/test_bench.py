"""The README's benchmark commands still run and print their tables.

Figures are not asserted: performance goals live in ``bench/``, not in timed tests. What is
checked is that each script finishes, checks every ACK it got, and reports every row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_listener_benchmark_prints_every_server_for_every_scenario() -> None:
    out = run_bench("bench_listener.py", "--quick")
    rows = [line for line in out.splitlines() if " conn" in line]
    peer = [] if "simple-hl7 left out: " in out else ["simple-hl7"]  # no node, npm or registry
    for scenario in ("1 conn, 2 KB", "8 conns, 2 KB", "1 conn, 200 KB"):
        servers = [line[17:33].strip() for line in rows if line.startswith(scenario)]
        assert servers == ["ceiling", *peer, "floor full", "floor normal", "courier full", "courier normal"]
    assert "Every Courier and simple-hl7 ACK was checked" in out


def test_pipeline_benchmark_prints_each_step() -> None:
    out = run_bench("bench_pipeline.py")
    for step in ("parse", "screen", "ack", "handle_frame", "normal", "full"):
        assert f"  {step} " in out


def test_delivery_benchmark_counts_every_message_at_the_sandbox() -> None:
    out = run_bench("bench_delivery.py", "--quick")
    assert "every message was counted at the Qliq sandbox" in out


def test_drain_benchmark_checks_order_and_count_at_the_sandbox() -> None:
    out = run_bench("bench_drain.py", "--quick")
    rows = [line[:32].strip() for line in out.splitlines() if line.startswith(("(", "    bare"))]
    assert rows == [
        "(a) 30/s limit, concurrency 16",
        "(b) no limit, concurrency 32",
        "bare client, 32 threads",
    ]
    assert "every message delivered once, each patient's in the order queued" in out


def test_validation_benchmark_prints_every_message_at_every_level() -> None:
    out = run_bench("bench_validation.py", "--quick")
    header, *rows = [line for line in out.splitlines() if " | " in line]
    assert "off" in header and "tolerant ms" in header and "strict ms" in header
    assert [row[:22].strip() for row in rows] == ["ORU 2 KB", "ORU 200 KB, PDF", "NTE of 10 KB of ^"]
    assert "refused in" in out and "no worker started" in out


def test_store_benchmark_prints_sqlite_and_postgresql_at_1_and_8_connections() -> None:
    out = run_bench("bench_store.py", "--quick")
    rows = [line for line in out.splitlines() if " conn" in line and "node" in line]
    stores = ["sqlite full, 1 node", "postgresql on, 1 node", "postgresql on, 2 nodes"]
    for scenario in ("1 conn, 2 KB", "8 conns, 2 KB"):
        assert [line[16:40].strip() for line in rows if line.startswith(scenario)] == stores
    assert "Goal: postgresql on, 1 node at 8 conns" in out and "Every ACK was checked" in out
    assert "courier a" in out and "courier b" in out and "postgresql server" in out, "CPU per process"
    end_to_end = out.split("End to end", 1)[1].splitlines()
    assert [line[:24].strip() for line in end_to_end if "node" in line] == stores
    assert "every message's idempotency key reached the receiver" in out
