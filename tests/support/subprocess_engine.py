"""Run ``courier run`` as a child process, the way an operator does, for crash tests."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.mllp import BlockingClient

STORE_KEY = base64.b64encode(b"crash-test-key-not-secret-32byte").decode()

CHANNEL = """
name = "crash"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "team-chat"
type = "kpn"
mapping = "chat.toml"
  [destinations.settings]
  base_url = "http://127.0.0.1:9"
  client_id = "crash-test"
"""

MAPPING = """
input = ["ORU^R01"]
output = "kpn"
[fields]
chat_type = { const = "groupchat" }
aux_id = { const = "ward-7" }
body = { template = "{OBR-4.2} result {MSH-10}" }
"""

# One channel to an ``http`` destination (``{url}``, with the ``HTTP_MAPPING`` as hook.toml)
# and status reports to a ``courier listen`` hospital: the failover and crash tests share it.
HTTP_CHANNEL = """
name = "lab"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "results-hook"
type = "http"
mapping = "hook.toml"
order_by = "{{PID-3.1}}"
concurrency = 4
  [destinations.settings]
  url = "{url}/results"
  [destinations.retry]
  initial_delay_s = {retry}
  max_delay_s = {retry}
  jitter = 0
[status_reports]
to = "tcp:host=127.0.0.1:port={hospital}"
events = ["accepted", "failed"]
"""

HTTP_MAPPING = """
input = ["ORU^R01"]
output = "http"
[fields]
messageId = "MSH-10"
patient = "PID-3.1"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def courier(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``courier <args>`` as a child process in ``cwd``, its output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def listening(port: int, process: subprocess.Popen) -> bool:
    """Whether ``courier run`` accepts MLLP connections on ``port`` yet (it must not have exited)."""
    if process.poll() is not None:
        raise AssertionError(f"courier run exited: {process.stderr.read()[-2000:]}")
    try:
        BlockingClient(port, timeout=0.5).sock.close()
        return True
    except OSError:
        return False


class EngineProcess:
    """``courier run`` on one channel and one store file, started and killed at will."""

    def __init__(self, workdir: Path, durability: str = "full") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.store = workdir / "courier.sqlite3"
        self.durability = durability
        (workdir / "crash.toml").write_text(CHANNEL.format(port=self.port))
        (workdir / "chat.toml").write_text(MAPPING)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        command = [
            sys.executable,
            "-m",
            "engine",
            "run",
            str(self.workdir / "crash.toml"),
            "--store",
            str(self.store),
            "--durability",
            self.durability,
            "--hold-deliveries",
        ]
        env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY)
        self.process = subprocess.Popen(
            command, env=env, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"engine exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("engine did not start listening")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or a power-cut process."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
