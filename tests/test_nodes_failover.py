"""Two ``courier run`` nodes on one throwaway PostgreSQL: failover and no split brain.

Each node is a real child process with its own MLLP listener (a load balancer would front
both), one ``http`` destination to a slow recording server in the test process (the
sandbox), and status reports to a ``courier listen`` hospital. The leases are 2 s, so a dead
node's work is taken over within seconds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import with_msh
from tests.support.mllp import BlockingClient
from tests.support.postgres import committed_rows
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.subprocess_engine import (
    HTTP_CHANNEL,
    HTTP_MAPPING,
    STORE_KEY,
    courier,
    free_port,
    listening,
)
from tests.support.waiting import wait_for

LEASE_S = 2.0
IDLE_S = 2.0  # a queue looks for work at least this often (engine.delivery.queue.DEFAULT_IDLE_S)
RETRY_S = 0.5
SLACK_S = 5.0  # measured alone: the whole bound is reached within 2.5-4.5 s of the kill
RUNS = 3
MESSAGES = 40
PATIENTS = 6

ORU = (
    b"MSH|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131142501||ORU^R01|F0000|P|2.5\r"
    b"PID|1||P0^^^NHS^NH||DOE^JANE\r"
    b"OBR|1||ORD1|GLU^Glucose\r"
)


def oru(n: int) -> bytes:
    return with_msh(ORU, control_id=f"F{n:04d}").replace(b"|P0^", f"|P{n % PATIENTS}^".encode())


class Cluster:
    """``courier listen`` and two ``courier run`` nodes on one PostgreSQL database."""

    def __init__(self, tmp_path: Path, store: str, sandbox: ScriptedServer) -> None:
        self.tmp_path = tmp_path
        self.store = store
        self.env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY)
        self.hospital_port = free_port()
        self.hospital = courier(
            "listen", f"tcp:{self.hospital_port}:interface=127.0.0.1", "--summary", cwd=tmp_path, env=self.env
        )
        (tmp_path / "hook.toml").write_text(HTTP_MAPPING)
        self.ports: dict[str, int] = {}
        self.nodes: dict[str, subprocess.Popen] = {}
        for name in ("n1", "n2"):
            port = self.ports[name] = free_port()
            channel = HTTP_CHANNEL.format(
                port=port, url=sandbox.base_url, hospital=self.hospital_port, retry=RETRY_S
            )
            (tmp_path / f"{name}.toml").write_text(channel)
            self.nodes[name] = courier(
                "run", f"{name}.toml", "--store", store, "--node-name", name,
                "--lease-seconds", str(LEASE_S), cwd=tmp_path, env=self.env,
            )  # fmt: skip
        for name, port in self.ports.items():
            wait_for(
                lambda port=port, name=name: listening(port, self.nodes[name]),
                timeout=30,
                what=f"node {name} listening",
            )

    def rows(self, sql: str, *params: object) -> list[tuple]:
        return committed_rows(self.store, sql, params)

    def kill(self, name: str) -> None:
        self.nodes[name].send_signal(signal.SIGKILL)
        self.nodes[name].wait(10)

    def close(self) -> str:
        for process in self.nodes.values():
            if process.poll() is None:
                process.terminate()
        logs = "".join(process.communicate(timeout=30)[1] for process in self.nodes.values())
        self.hospital.terminate()
        out, _ = self.hospital.communicate(timeout=10)
        acks = [line.split() for line in out.splitlines() if line.startswith("ACK")]
        self.statuses = [ack[1] for ack in acks]  # each status message's own control id (MSH-10)
        self.reported = {ack[4] for ack in acks}  # the control ids they report on (MSA-2)
        return logs


@pytest.fixture
def sandbox() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def send_to_either(cluster: Cluster, order: list[str], n: int) -> None:
    """The hospital's resend: try the nodes in ``order`` until one ACKs (the load balancer's job)."""
    for name in order:
        try:
            with BlockingClient(cluster.ports[name], timeout=5) as client:
                if b"MSA|AA|" in client.request(oru(n)):
                    return
        except OSError:
            continue
    raise AssertionError(f"message {n} was ACKed by no node")


@pytest.mark.parametrize("run", range(RUNS))
def test_a_node_killed_at_a_random_moment_loses_and_doubles_nothing(tmp_path, postgres_url, sandbox, run):
    sandbox.reply(*[Reply(200, {}, delay_s=0.2) for _ in range(4 * MESSAGES)])
    cluster = Cluster(tmp_path, postgres_url, sandbox)
    rng = random.Random()
    held_at_kill: list[int] = []

    def kill() -> None:
        """Run 0 kills the node sending the outbox, run 1 the other one, later runs either."""
        ((holder,),) = cluster.rows("SELECT holder FROM leases WHERE name = 'outbox:lab'")
        outbox_node = holder.split(".")[0]
        other = "n2" if outbox_node == "n1" else "n1"
        victim = (outbox_node, other)[run] if run < 2 else rng.choice([outbox_node, other])
        cluster.kill(victim)
        held_at_kill.extend(
            i for (i,) in cluster.rows("SELECT id FROM deliveries WHERE lease_owner LIKE ?", f"{victim}.%")
        )
        killed_at.append(time.monotonic())

    killed_at: list[float] = []
    timer = threading.Timer(rng.uniform(0.3, 2.5), kill)
    try:
        timer.start()
        for n in range(MESSAGES):
            send_to_either(cluster, [("n1", "n2")[n % 2], ("n2", "n1")[n % 2]], n)
            time.sleep(0.03)
        timer.join()

        def sent(ids: list[int] | None = None) -> int:
            return sum(state == "SENT" and (ids is None or i in ids) for i, state in states())

        def states() -> list[tuple[int, str]]:
            return cluster.rows("SELECT id, state FROM deliveries")

        wait_for(lambda: sent(held_at_kill) == len(held_at_kill), timeout=30, what="the dead node's sends")
        taken_over = time.monotonic() - killed_at[0]
        wait_for(lambda: sent() == MESSAGES, timeout=30, what="every delivery SENT")
        wait_for(
            lambda: (
                cluster.rows("SELECT COUNT(*) FROM outbox WHERE state = 'SENT'")[0][0]
                >= cluster.rows("SELECT COUNT(*) FROM outbox")[0][0]
            ),
            timeout=20,
            what="every status report acknowledged",
        )
    finally:
        timer.cancel()
        logs = cluster.close()
    assert "Traceback" not in logs

    # Every ACKed message is stored exactly once (resends to the survivor are duplicates).
    stored = cluster.rows("SELECT control_id, COUNT(*) FROM messages GROUP BY control_id")
    assert sorted(stored) == [(f"F{n:04d}", 1) for n in range(MESSAGES)]

    # Every delivery reached the sandbox under one key, whoever sent it (a resend: same key).
    keys_by_message = defaultdict(set)
    arrivals = defaultdict(list)  # patient → message ids in the order the sandbox first saw them
    for request in sandbox.received:
        body = request.json()
        key = request.headers["Idempotency-Key"]
        if key not in keys_by_message[body["messageId"]]:
            arrivals[body["patient"]].append(int(key.split(":")[2]))
        keys_by_message[body["messageId"]].add(key)
    assert {m: len(k) for m, k in keys_by_message.items()} == {f"F{n:04d}": 1 for n in range(MESSAGES)}

    # order_by: per patient, the sandbox saw the messages in the order they were stored.
    assert all(ids == sorted(ids) for ids in arrivals.values()), arrivals

    # The survivor finished what the dead node held within the lease, a look for work, a retry
    # and the sends themselves (slack for a loaded 2-core machine).
    assert taken_over <= LEASE_S + IDLE_S + RETRY_S + SLACK_S, (taken_over, held_at_kill)

    # The channel's statuses reached the hospital in the outbox's order (a resend repeats one),
    # one per message and none missing, whichever node committed its SENT before the kill.
    outbox = [c for (c,) in cluster.rows("SELECT control_id FROM outbox WHERE channel = 'lab' ORDER BY seq")]
    received = [c for i, c in enumerate(cluster.statuses) if i == 0 or cluster.statuses[i - 1] != c]
    assert received == outbox
    assert len(outbox) == MESSAGES and cluster.reported == {f"F{n:04d}" for n in range(MESSAGES)}


def test_a_lease_renewed_by_one_node_keeps_the_other_from_sending_the_same_delivery(
    tmp_path, postgres_url, sandbox
):
    sandbox.reply(Reply(200, {}, delay_s=3 * LEASE_S))  # the first send outlasts three leases
    cluster = Cluster(tmp_path, postgres_url, sandbox)
    try:
        send_to_either(cluster, ["n1"], 1)
        wait_for(lambda: len(sandbox.received) == 1, timeout=10, what="the first send")
        ((owner, lease_until),) = cluster.rows("SELECT lease_owner, lease_until FROM deliveries")
        time.sleep(2 * LEASE_S)  # the other node looks for work meanwhile, lease or not
        ((still_owner, renewed_until),) = cluster.rows("SELECT lease_owner, lease_until FROM deliveries")
        assert len(sandbox.received) == 1, "the other node waited"
        assert still_owner == owner and renewed_until > lease_until, "renewed while in flight"
        wait_for(lambda: cluster.rows("SELECT state FROM deliveries") == [("SENT",)], timeout=10, what="SENT")
    finally:
        cluster.close()
    assert len(sandbox.received) == 1
