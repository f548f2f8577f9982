"""Delivery benchmark: MLLP → store → ACK → queue → vendor sandbox, end to end, in one run.

    python bench/bench_delivery.py [--quick]

The vendor sandboxes run as ``courier sandbox`` and Courier as ``courier run`` (a Qliq
channel, ``durability=normal``), each in its own process; the asyncio client of
``bench_listener.py`` sends ~2 KB ORU^R01 messages over 4 connections and checks every ACK.
Two rates come from the same run: the listener's ACK rate (first frame sent → last ACK) and
the delivered rate (first frame sent → the sandbox has recorded every message), for a
destination ``concurrency`` of 1 and of 4. The sandbox is on loopback with no latency, so
the delivered rate is Courier's own ceiling (mapping, store round trips, HTTP client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_listener import batches, free_port, one_connection, wait_for_port  # noqa: E402
from messages import small_oru  # noqa: E402

CHANNEL = """
name = "bench-delivery"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "ward-qliq"
type = "qliq"
mapping = "bench_qliq.toml"
concurrency = {concurrency}
  [destinations.settings]
  base_url = "{qliq_url}"
  api_key = "${{QLIQ_API_KEY}}"
  [destinations.status]
  poll = false
"""

MAPPING = """
input = ["ORU^R01"]
output = "qliq"
[fields]
to = { const = "nurse@sandbox.qliq" }
subject = { template = "Result {OBR-3.1}" }
text = { template = "{OBR-4.2} {OBR-3.1}: {OBX-3.2} {OBX-5} {OBX-6.1}" }
"""

CONNECTIONS = 4
STORE_KEY = "YmVuY2htYXJrLWtleS1ub3QtYS1zZWNyZXQtMzJieXQ="


@dataclass
class Figures:
    messages: int
    ack_rate: float
    delivered_rate: float
    drain_s: float  # last ACK → last delivery


def start_sandboxes(
    workdir: Path, vendor: str = "qliq", credential: str = "qliq_api_key"
) -> tuple[subprocess.Popen, str, str]:
    """``courier sandbox`` on free ports (the demo may hold the README's), its random
    credentials kept under ``workdir``; returns the process, ``vendor``'s API root and its
    ``credential`` (a name in credentials.json)."""
    free = "qliq=0,conneqt=0,medallies=0,kpn=0,http=0"
    command = [sys.executable, "-m", "engine", "sandbox", "--ports", free]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        name, _, url = line.strip().partition(" ")
        if name == vendor:
            credentials = json.loads((workdir / "var" / "sandbox" / "credentials.json").read_text())
            return process, url.strip(), credentials[credential]
    raise RuntimeError("courier sandbox did not start")


def start_courier(
    workdir: Path, port: int, qliq_url: str, api_key: str, concurrency: int
) -> subprocess.Popen:
    channel = workdir / "bench_delivery.toml"
    channel.write_text(CHANNEL.format(port=port, qliq_url=qliq_url, concurrency=concurrency))
    (workdir / "bench_qliq.toml").write_text(MAPPING)
    store = workdir / f"delivery-{concurrency}.sqlite3"
    env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY, QLIQ_API_KEY=api_key)
    command = [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(channel),
        "--store",
        str(store),
        "--durability",
        "normal",
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def control(qliq_url: str, path: str, method: str = "GET") -> dict:
    root = "/".join(qliq_url.split("/", 3)[:3])
    body = b"{}" if method == "POST" else None
    request = urllib.request.Request(root + path, method=method, data=body)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def delivered(qliq_url: str) -> int:
    return len(control(qliq_url, "/_sandbox/state")["messages"])


async def send_all(port: int, per_connection: int) -> float:
    """Send every message and wait for every ACK; returns when the last ACK arrived."""
    work = batches(small_oru, "D", CONNECTIONS, per_connection)
    await asyncio.gather(*(one_connection(port, b, [], check_msa2=True) for b in work))
    return time.perf_counter()


def run_once(workdir: Path, qliq_url: str, api_key: str, concurrency: int, per_connection: int) -> Figures:
    control(qliq_url, "/_sandbox/reset", "POST")
    port = free_port()
    courier = start_courier(workdir, port, qliq_url, api_key, concurrency)
    try:
        wait_for_port(port, courier)
        total = CONNECTIONS * per_connection
        started = time.perf_counter()
        last_ack = asyncio.run(send_all(port, per_connection))
        while (count := delivered(qliq_url)) < total:
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {count} of {total} delivered after 10 minutes")
            time.sleep(0.25)  # the state holds every request: do not make the sandbox the bottleneck
        done = time.perf_counter()
    finally:
        courier.terminate()
        courier.wait(10)
    return Figures(total, total / (last_ack - started), total / (done - started), done - last_ack)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages (a smoke run)")
    args = parser.parse_args()
    per_connection = 50 if args.quick else 500
    results = {}
    with tempfile.TemporaryDirectory(prefix="courier-bench-delivery-") as tmp:
        sandbox, qliq_url, api_key = start_sandboxes(Path(tmp))
        try:
            for concurrency in (1, 4):
                results[concurrency] = run_once(Path(tmp), qliq_url, api_key, concurrency, per_connection)
        finally:
            sandbox.terminate()
            sandbox.wait(10)
    print(f"\n{'concurrency':>11} {'messages':>9} {'ACKs/s':>8} {'delivered/s':>12} {'drain s':>8}")
    for concurrency, f in results.items():
        rates = f"{f.ack_rate:8.0f} {f.delivered_rate:12.0f}"
        print(f"{concurrency:>11} {f.messages:>9} {rates} {f.drain_s:8.2f}")
    print("\nEvery ACK was checked (AA/CA, MSA-2 = MSH-10); every message was counted at the Qliq sandbox.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
