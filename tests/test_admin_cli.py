"""``courier run --admin`` as an operator runs it: refused at once without operators, on a port
of the engine's own, or with an operators file others can read; served, and stopped cleanly,
with them. The secret never appears in what the command prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import requests

from tests.support.subprocess_engine import STORE_KEY, free_port
from tests.support.waiting import wait_for
from tests.test_cli_start_failures import busy_port, channel, refused, run  # noqa: F401 (fixtures)

SECRET = "an operator secret of some length"


def test_admin_without_operators_is_refused(channel) -> None:  # noqa: F811
    result = run(channel, channel.parent / "s.sqlite3", "--admin", f"tcp:{free_port()}:interface=127.0.0.1")
    refused(
        result, "run", "--admin needs its operators: give --admin-operators-file or --admin-operators-env"
    )


def test_admin_on_a_channel_port_is_refused(channel, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("OPS", f"alice:{SECRET}")
    port = re.search(r"tcp:([0-9]+):", channel.read_text()).group(1)
    admin = ("--admin", f"tcp:port={port}:interface=127.0.0.1", "--admin-operators-env", "OPS")
    result = run(channel, channel.parent / "s.sqlite3", *admin)
    refused(result, "run", f"port {port} is the port of channel crash's listener")


def test_an_operators_file_others_can_read_is_refused(channel) -> None:  # noqa: F811
    operators = channel.parent / "operators"
    operators.write_text(f"alice:{SECRET}\n")
    operators.chmod(0o644)
    args = ("--admin", f"tcp:{free_port()}:interface=127.0.0.1", "--admin-operators-file", str(operators))
    refused(run(channel, channel.parent / "s.sqlite3", *args), "run", "can be read by others: chmod 600 it")
    operators.chmod(0o600)
    operators.write_text("alice:short\n")
    result = run(channel, channel.parent / "s.sqlite3", *args)
    refused(result, "run", "line 1: the secret is shorter than 16 characters")
    assert "short" not in result.stderr.replace("shorter", "")


def test_admin_on_a_busy_port_cannot_start(channel, busy_port, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("OPS", f"alice:{SECRET}")
    admin = ("--admin", f"tcp:{busy_port}:interface=127.0.0.1", "--admin-operators-env", "OPS")
    refused(run(channel, channel.parent / "s.sqlite3", *admin), "run", "Address already in use")


def test_run_serves_the_console_from_operators_in_the_environment(channel) -> None:  # noqa: F811
    port = free_port()
    env = dict(os.environ, COURIER_STORE_KEY=STORE_KEY, OPS=f"alice:{SECRET}", PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "engine", "run", str(channel), "--store", str(channel.parent / "s.sqlite3")]
    argv += [
        "--hold-deliveries",
        "--admin",
        f"tcp:{port}:interface=127.0.0.1",
        "--admin-operators-env",
        "OPS",
    ]
    engine = subprocess.Popen(
        argv, cwd=channel.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/readyz"), 30, "ready")
        client = requests.Session()
        login = client.post(f"{url}/login", data={"name": "alice", "secret": SECRET}, headers={"Origin": url})
        assert login.status_code == 200 and "crash" in login.text and "team-chat" in login.text
    finally:
        engine.send_signal(signal.SIGINT)
        out, err = engine.communicate(timeout=60)
    assert engine.returncode == 0, err
    assert f"courier: console at {url}/" in err and SECRET not in out + err


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
