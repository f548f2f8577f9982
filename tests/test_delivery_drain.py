"""Draining at the vendor's limit: connections kept alive, requests kept in flight, and a rate
limit that holds across restarts and across queues sharing one store.

Real HTTP servers on loopback and real store files; no timing is asserted tighter than the
shared test machine allows.
"""

from __future__ import annotations

import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.channel.check import load_channels
from engine.service import routes
from tests.support.scripted_http import Reply, ScriptedServer

HTTP_CHANNEL = """
    name = "drain"
    [source]
    listen = "tcp:0:interface=127.0.0.1"
    [source.filter]
    message_types = ["ORU^R01"]
    [[destinations]]
    name = "hook"
    type = "http"
    mapping = "hook.toml"
    concurrency = {concurrency}
      [destinations.settings]
      url = "{url}"
"""
HTTP_MAPPING = """
    input = ["ORU^R01"]
    output = "http"
    [fields]
    patient = {{ path = "PID-3.1" }}
"""


def http_channel(tmp_path: Path, url: str, concurrency: int):
    (tmp_path / "hook.toml").write_text(textwrap.dedent(HTTP_MAPPING.format()))
    file = tmp_path / "drain.toml"
    file.write_text(textwrap.dedent(HTTP_CHANNEL.format(url=url, concurrency=concurrency)))
    (channel,) = load_channels([file], env={})
    return channel


def test_a_destination_keeps_a_connection_alive_for_each_of_its_threads(tmp_path):
    server = ScriptedServer()
    try:
        concurrency, rounds = 16, 3
        server.reply(*[Reply(200, {}, delay_s=0.1)] * (concurrency * rounds))
        (route,) = routes(http_channel(tmp_path, server.base_url, concurrency), time.time)

        def send(n: int) -> str:
            return route.destination.send({"n": n}, idempotency_key=f"k{n}").outcome.value

        with ThreadPoolExecutor(concurrency) as threads:  # as the queue's own threads send
            for _ in range(rounds):  # in waves: every connection is idle at once in between
                assert set(threads.map(send, range(concurrency))) == {"accepted"}
        assert server.connections == concurrency  # requests' default kept 10: 28 connections
    finally:
        server.close()
