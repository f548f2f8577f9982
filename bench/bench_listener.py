"""Listener benchmark: MLLP → store → ACK, side by side with a no-parse ceiling, in one run.

    python bench/bench_listener.py [--quick] [--repeat N]

Servers run in their own processes; one asyncio client drives them all the same way:
one connection ping-pong and 8 connections, a ~2 KB ORU^R01 (10 OBX) and a ~200 KB one
(base64 PDF in OBX ED). Every ACK's MSA-2 is checked against the message's MSH-10.
Courier runs as ``courier run`` with a benchmark channel (filter, mapping dry-run and a real
SQLite store) at ``durability=full`` and ``normal``, with its delivery queue held so only the
receiving path is measured. A second baseline, the Twisted floor (``floor_server.py``),
does only what Courier's rules make every message cost: Twisted, a hand-off to one writer
thread and a SQLite commit before a fixed ACK; each Courier figure is also shown as a share
of the floor at the same durability. A peer, Node's simple-hl7 (``simple_hl7_server.js``:
it parses each message and builds its ACK, and stores nothing), is installed from npm into
the bench's cache folder on the first run (``node`` and ``npm`` needed; without them, or
offline, its row is left out and the reason printed).
On a shared machine the figures move by 10-20 % from run to run: ``--repeat`` runs
everything N times (servers restarted each time) and prints the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from messages import large_oru, small_oru  # noqa: E402

CHANNEL = """
name = "bench"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
max_message_bytes = 1048576
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "team-chat"
type = "kpn"
mapping = "bench_kpn.toml"
  [destinations.settings]
  base_url = "http://127.0.0.1:9"
  client_id = "bench"
"""

MAPPING = """
input = ["ORU^R01"]
output = "kpn"
[fields]
chat_type = { const = "groupchat" }
aux_id = { template = "ward-{PV1-3.1}" }
[fields.body]
template = "{OBR-4.2} for {PID-5.2} {PID-5.1} ({PID-3.1}): {OBX-5} {OBX-6.1}"
transforms = [{ max_len = 500 }]
"""


@dataclass
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    count: int
    cpu_us: float | None = None
    """CPU time the server spent per message, all its threads together (None without /proc)."""


def cpu_seconds(pid: int) -> float | None:
    """CPU time so far of a process's threads, to the nanosecond (Linux /proc schedstat)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
    except (OSError, ValueError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def start_ceiling(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "ceiling_server.py"), str(port)], stdout=subprocess.DEVNULL
    )


def start_floor(port: int, durability: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / "floor_server.py"), str(port), durability], stdout=subprocess.DEVNULL
    )


SIMPLE_HL7 = "simple-hl7@3.3.0"


def simple_hl7_modules() -> Path | str:
    """The node_modules folder holding simple-hl7 (installed the first time), or why not."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "courier-bench" / SIMPLE_HL7.replace("@", "-")
    modules = folder / "node_modules"
    if (modules / "simple-hl7" / "package.json").is_file():
        return modules
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node and npm are not installed"
    folder.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run([*command, SIMPLE_HL7], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"npm install {SIMPLE_HL7} took over 5 minutes"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return f"npm install {SIMPLE_HL7} failed: {lines[-1]}"
    return modules


def start_simple_hl7(port: int, modules: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["node", str(HERE / "simple_hl7_server.js"), str(port)],
        env=dict(os.environ, NODE_PATH=str(modules)),
        stdout=subprocess.DEVNULL,
    )


def start_courier(
    port: int,
    workdir: Path,
    durability: str,
    store: str | None = None,
    *,
    channel: str = CHANNEL,
    node: str | None = None,
    hold: bool = True,
) -> subprocess.Popen:
    """``courier run`` on a fresh SQLite file, or on ``store`` (a postgresql:// URL) if given;
    ``channel`` is formatted with the port, ``node`` names the node among several on one store,
    and ``hold`` keeps the delivery queue held (only the receiving path is measured)."""
    (workdir / f"bench-{port}.toml").write_text(channel.format(port=port))
    (workdir / "bench_kpn.toml").write_text(MAPPING)
    env = dict(os.environ, COURIER_STORE_KEY="YmVuY2htYXJrLWtleS1ub3QtYS1zZWNyZXQtMzJieXQ=")
    store = store or str(workdir / f"courier-{durability}-{port}.sqlite3")
    command = [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(workdir / f"bench-{port}.toml"),
        "--store",
        str(store),
        "--durability",
        durability,
        *(["--node-name", node] if node else []),
        *(["--hold-deliveries"] if hold else []),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def one_connection(
    port: int, messages: list[tuple[bytes, bytes]], latencies: list[float], check_msa2: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024 * 1024)
    try:
        for payload, control_id in messages:
            started = time.perf_counter()
            writer.write(b"\x0b" + payload + b"\x1c\r")
            reply = await reader.readuntil(b"\x1c\r")
            latencies.append(time.perf_counter() - started)
            if check_msa2:
                msa = reply[reply.index(b"\rMSA|") + 5 : -2].split(b"\r", 1)[0].split(b"|")  # -2: frame end
                if msa[0] not in (b"AA", b"CA") or msa[1] != control_id:
                    raise AssertionError(f"bad ACK for {control_id!r}: {msa[:2]!r}")
    finally:
        writer.close()


def batches(make, prefix: str, connections: int, per_connection: int) -> list[list[tuple[bytes, bytes]]]:
    run = f"{prefix}{time.monotonic_ns() % 10**6:06d}"
    return [
        [(make(f"{run}{c:02d}{i:06d}"), f"{run}{c:02d}{i:06d}".encode()) for i in range(per_connection)]
        for c in range(connections)
    ]


async def drive(
    port: int | Sequence[int],
    pid: int | Sequence[int],
    make,
    connections: int,
    per_connection: int,
    check_msa2: bool,
) -> Figures:
    """``connections`` clients spread in turn over the ports; the CPU of every pid together."""
    ports = [port] if isinstance(port, int) else list(port)
    pids = [pid] if isinstance(pid, int) else list(pid)
    warmup = batches(make, "W", connections, max(20, per_connection // 20))
    await spread(ports, warmup, [], check_msa2)
    work = batches(make, "M", connections, per_connection)
    latencies: list[float] = []
    cpu_before = processes_cpu(pids)
    started = time.perf_counter()
    await spread(ports, work, latencies, check_msa2)
    elapsed = time.perf_counter() - started
    cpu_after = processes_cpu(pids)
    latencies.sort()
    return Figures(
        rate=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        count=len(latencies),
        cpu_us=None if None in (cpu_before, cpu_after) else (cpu_after - cpu_before) / len(latencies) * 1e6,
    )


async def spread(
    ports: Sequence[int], work: list[list[tuple[bytes, bytes]]], latencies: list[float], check_msa2: bool
) -> None:
    """One connection per batch, the batches given to the ports in turn (several nodes)."""
    await asyncio.gather(
        *(one_connection(ports[i % len(ports)], b, latencies, check_msa2) for i, b in enumerate(work))
    )


def processes_cpu(pids: Sequence[int]) -> float | None:
    """The CPU seconds so far of all these processes together (None without /proc)."""
    times = [cpu_seconds(pid) for pid in pids]
    return None if None in times else sum(times)


SCENARIOS = [
    ("1 conn, 2 KB", small_oru, 1, 3000),
    ("8 conns, 2 KB", small_oru, 8, 600),
    ("1 conn, 200 KB", large_oru, 1, 300),
]
SERVERS = ["ceiling", "simple-hl7", "floor full", "floor normal", "courier full", "courier normal"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages (a smoke run)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run N times, print medians")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    modules = simple_hl7_modules()
    servers = SERVERS
    if isinstance(modules, str):
        print(f"simple-hl7 left out: {modules}")
        servers = [server for server in SERVERS if server != "simple-hl7"]
    runs: dict[tuple[str, str], list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="courier-bench-") as tmp:
        for _ in range(args.repeat):
            for server in servers:
                for key, figures in run_server(server, Path(tmp), scale, modules).items():
                    runs.setdefault(key, []).append(figures)
    print_table({key: median(figures) for key, figures in runs.items()}, servers, args.repeat)
    return 0


def run_server(
    server: str, workdir: Path, scale: float, modules: Path | str
) -> dict[tuple[str, str], Figures]:
    """Start one server, drive every scenario against it, stop it."""
    port = free_port()
    kind, _, durability = server.partition(" ")
    if kind == "ceiling":
        process = start_ceiling(port)
    elif kind == "simple-hl7":
        process = start_simple_hl7(port, Path(modules))
    elif kind == "floor":
        process = start_floor(port, durability)
    else:
        process = start_courier(port, workdir, durability)
    results = {}
    checked = kind in ("courier", "simple-hl7")
    try:
        wait_for_port(port, process)
        for name, make, connections, per_connection in SCENARIOS:
            count = max(30, int(per_connection * scale))
            results[(server, name)] = asyncio.run(
                drive(port, process.pid, make, connections, count, check_msa2=checked)
            )
    finally:
        process.terminate()
        process.wait(10)
    return results


def median(runs: list[Figures]) -> Figures:
    """Each figure's median over the runs (rates and latencies each taken on their own)."""
    cpu = [f.cpu_us for f in runs if f.cpu_us is not None]
    return Figures(
        rate=statistics.median(f.rate for f in runs),
        p50_ms=statistics.median(f.p50_ms for f in runs),
        p99_ms=statistics.median(f.p99_ms for f in runs),
        count=sum(f.count for f in runs),
        cpu_us=statistics.median(cpu) if cpu else None,
    )


def print_table(results: dict[tuple[str, str], Figures], servers: list[str], repeat: int = 1) -> None:
    print(
        f"\n{'scenario':16} {'server':16} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU µs/msg':>11} {'of ceiling':>11} {'of floor':>9} {'of simple-hl7':>14}"
    )
    for name, *_ in SCENARIOS:
        ceiling = results[("ceiling", name)].rate
        peer = results.get(("simple-hl7", name))
        for server in servers:
            f = results[(server, name)]
            cpu = "-" if f.cpu_us is None else f"{f.cpu_us:.0f}"
            share = f.rate / ceiling
            line = (
                f"{name:16} {server:16} {f.rate:9.0f} {f.p50_ms:8.3f} {f.p99_ms:8.3f} {cpu:>11} {share:10.0%}"
            )
            if server.startswith("courier"):
                floor = results[("floor " + server.split()[1], name)].rate
                line += f" {f.rate / floor:8.0%}"
                if peer is not None:
                    line += f" {f.rate / peer.rate:13.0%}"
            print(line)
    if repeat > 1:
        print(f"\nMedians of {repeat} runs; 'of ceiling' compares the median rates.")
    print("\nCPU µs/msg: the server process's CPU time (every thread) per message, from /proc.")
    print("Every Courier and simple-hl7 ACK was checked: MSA-1 AA and MSA-2 = the message's MSH-10.")


if __name__ == "__main__":
    raise SystemExit(main())
