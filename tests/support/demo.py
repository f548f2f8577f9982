"""The README's demo in a scratch copy of the repository, on free ports.

``courier run --sandbox`` and ``courier listen`` run as child processes, as a new user runs
them, from a directory holding copies of ``channels/``, ``mappings/`` and ``sample_messages/``.
The README's fixed ports stay in the README: the copied channel files listen and report on free
ports, the ``*_BASE_URL`` variables and ``--sandbox-ports`` move the sandboxes, ``--webhooks``
moves the webhooks and ``--admin`` the console, so the demo itself can run beside the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.mllp import BlockingClient
from tests.support.subprocess_engine import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The README's ports and the names the demo's commands use for them.
README_PORTS = {
    "lis-oru-to-conneqt": 2575,
    "ehr-mdm-to-qliq": 2576,
    "ris-oru-to-medallies": 2577,
    "ehr-mdm-to-kpn": 2578,
    "hospital": 2590,
    "qliq": 18441,
    "conneqt": 18442,
    "medallies": 18443,
    "kpn": 18444,
    "http": 18445,
    "webhooks": 18480,
    "admin": 8470,
}
SANDBOXES = ("qliq", "conneqt", "medallies", "kpn", "http")
STOP_TIMEOUT_S = 60.0
"""How long a stopped ``courier`` may take: seconds normally, bounded under a loaded machine."""


class Demo:
    """A scratch copy of the demo; ``ports`` maps each README port's name to a free port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in README_PORTS}
        for name in ("mappings", "sample_messages"):
            shutil.copytree(ROOT / name, workdir / name)
        (workdir / "channels").mkdir()
        for channel in sorted((ROOT / "channels").glob("*.toml")):
            (workdir / "channels" / channel.name).write_text(self._on_free_ports(channel.read_text()))
        self.env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            **{f"{name.upper()}_BASE_URL": f"http://127.0.0.1:{self.ports[name]}" for name in SANDBOXES},
        )

    def _on_free_ports(self, text: str) -> str:
        """A channel file listening, reporting and authorising KPN on this copy's ports."""
        name = re.search(r'^name = "([^"]+)"', text, re.MULTILINE).group(1)
        text = text.replace(f"tcp:{README_PORTS[name]}:", f"tcp:{self.ports[name]}:")
        text = text.replace(f"port={README_PORTS['hospital']}", f"port={self.ports['hospital']}")
        if 'type = "kpn"' in text:  # the OAuth redirect too (its default port is fixed)
            redirect = f'  redirect_uri = "http://127.0.0.1:{free_port()}/callback"\n'
            text = text.replace("[destinations.settings]\n", "[destinations.settings]\n" + redirect, 1)
        return text

    def channel_on(self, endpoint: str) -> str:
        """The channel (or other README name) whose port an endpoint string ends with."""
        port = int(re.search(r"[0-9]+$", endpoint).group())
        return next(name for name, chosen in self.ports.items() if chosen == port)

    def rewrite(self, command: str) -> str:
        """A README command with this copy's ports instead of the README's."""
        for name, port in README_PORTS.items():
            command = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(self.ports[name]), command)
        return command

    def start(self, *args: str) -> subprocess.Popen:
        """``courier ARGS…`` in the background, in this copy. Its output goes to files (a pipe
        nobody reads would block it once full): :meth:`output` reads them."""
        name = args[0]
        with open(self.workdir / f"{name}.out", "a") as out, open(self.workdir / f"{name}.err", "a") as err:
            return subprocess.Popen(courier_argv(args), stdout=out, stderr=err, **self._where())

    def output(self, command: str, stream: str = "out") -> str:
        """What the background ``courier COMMAND`` printed so far on stdout ("out") or stderr."""
        return (self.workdir / f"{command}.{stream}").read_text()

    def run_engine(self, *options: str) -> subprocess.Popen:
        """``courier run --sandbox`` on this copy's ports, with more ``options``; returns once
        every channel listens."""
        sandbox_ports = ",".join(f"{name}={self.ports[name]}" for name in SANDBOXES)
        engine = self.start(
            "run",
            "--sandbox",
            "--sandbox-ports",
            sandbox_ports,
            "--webhooks",
            f"tcp:{self.ports['webhooks']}:interface=127.0.0.1",
            "--admin",
            f"tcp:{self.ports['admin']}:interface=127.0.0.1",
            *options,
        )
        for name in ("lis-oru-to-conneqt", "ehr-mdm-to-qliq", "ris-oru-to-medallies", "ehr-mdm-to-kpn"):
            wait_for_port(self.ports[name], engine, lambda: self.output("run", "err"))
        return engine

    def courier(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``courier ARGS…`` to completion, in this copy."""
        return subprocess.run(courier_argv(args), capture_output=True, timeout=timeout, **self._where())

    def _where(self) -> dict:
        return {"cwd": self.workdir, "env": self.env, "text": True}

    def send_path(self, path: str, channel: str) -> None:
        """``courier send PATH`` (a file or a folder, relative to the copy) to a channel."""
        sent = self.courier("send", path, "--to", f"tcp:host=127.0.0.1:port={self.ports[channel]}")
        assert sent.returncode == 0, sent.stdout + sent.stderr

    def wait_for_state(self, control_id: str, state: str, timeout: float = 30.0) -> str:
        """Until ``courier status CONTROL_ID`` shows ``state``; what it printed."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.courier("status", control_id).stdout
            if state in shown:
                return shown
            assert time.monotonic() < deadline, shown
            time.sleep(0.5)


def courier_argv(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def wait_for_port(
    port: int, process: subprocess.Popen, said: Callable[[], str], timeout: float = 60.0
) -> None:
    """Until ``port`` accepts connections; ``said`` tells why when ``process`` exited first."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, said()
        try:
            BlockingClient(port, timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.1)


def interrupt(*processes: subprocess.Popen) -> None:
    """Ctrl-C to each process in turn, each waited for (bounded) before the next: the engine
    before the hospital's listener, so its last statuses find the hospital still there."""
    stuck = []
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stuck.append(process.args[3])
            process.kill()
            process.wait()
    assert not stuck, f"courier {', '.join(stuck)} did not stop within {STOP_TIMEOUT_S}s of SIGINT"
