"""A command that cannot start says why in one line and exits non-zero, so a supervisor sees it.

Each case runs the real command in a subprocess against a real port or a real store file.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store import Cipher, Database
from tests.support.subprocess_engine import CHANNEL, MAPPING, STORE_KEY, free_port

OTHER_KEY = base64.b64encode(b"another-key-of-thirty-two-bytes!").decode()


def courier(*args: str, cwd: Path, key: str | None = STORE_KEY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COURIER_STORE_KEY"}
    if key is not None:
        env["COURIER_STORE_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env
    )


def refused(result: subprocess.CompletedProcess, command: str, reason: str) -> None:
    """Exit non-zero, one line on stderr that names the reason, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"courier {command}: "), result.stderr
    assert reason in lines[0], lines[0]


@pytest.fixture
def channel(tmp_path) -> Path:
    (tmp_path / "chat.toml").write_text(MAPPING)
    file = tmp_path / "crash.toml"
    file.write_text(CHANNEL.format(port=free_port()))
    return file


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def run(channel: Path, store: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return courier(
        "run", str(channel), "--store", str(store), "--hold-deliveries", *extra, cwd=channel.parent, **kwargs
    )


def test_run_on_a_busy_port_exits_non_zero(channel, busy_port) -> None:
    channel.write_text(CHANNEL.format(port=busy_port))
    refused(run(channel, channel.parent / "s.sqlite3"), "run", "Address already in use")


def test_listen_on_a_busy_port_exits_non_zero_instead_of_hanging(tmp_path, busy_port) -> None:
    result = courier("listen", f"tcp:{busy_port}:interface=127.0.0.1", cwd=tmp_path)
    refused(result, "listen", "Address already in use")


def test_run_refuses_a_store_that_is_not_a_database(channel) -> None:
    store = channel.parent / "notes.txt"
    store.write_text("these are not the pages of a database\n" * 200)
    refused(run(channel, store), "run", "file is not a database")


def test_run_refuses_a_store_written_with_another_key(channel) -> None:
    store = channel.parent / "s.sqlite3"
    Database.open(store, Cipher(base64.b64decode(STORE_KEY))).close()
    refused(run(channel, store, key=OTHER_KEY), "run", "the store key does not fit this database")


def test_run_refuses_a_store_with_corrupted_pages(channel) -> None:
    store = channel.parent / "s.sqlite3"
    db = Database.open(store, Cipher(base64.b64decode(STORE_KEY)))
    with db.transaction():
        for n in range(300):
            db.kv_put("filler", f"k{n}", os.urandom(2000))
    db.close()
    size = store.stat().st_size
    with open(store, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 4096)
    refused(run(channel, store), "run", "the store file is damaged")


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_run_refuses_a_key_file_others_may_read(channel, mode) -> None:
    key_file = channel.parent / "store.key"
    key_file.write_text(STORE_KEY + "\n")
    key_file.chmod(mode)
    result = run(channel, channel.parent / "s.sqlite3", "--key-file", str(key_file), key=None)
    refused(result, "run", f"has mode {mode:04o}; run: chmod 600")


def test_run_refuses_two_channels_with_a_destination_of_the_same_name(channel) -> None:
    other = channel.with_name("other.toml")
    other.write_text(CHANNEL.format(port=free_port()).replace('name = "crash"', 'name = "other"'))
    result = run(channel.parent, channel.parent / "s.sqlite3")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [
        "courier run: the channel files have problems:",
        f"{other}:8: destinations[0].name: destination 'team-chat' is also defined in channel 'crash' "
        f"({channel}); destination names must be unique across channels",
    ]


def test_sandbox_that_cannot_listen_exits_non_zero(tmp_path) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: binding fails at once."""
    refused(
        courier("sandbox", "--host", "192.0.2.1", cwd=tmp_path), "sandbox", "Cannot assign requested address"
    )


def test_run_refuses_a_node_name_a_running_engine_holds(channel) -> None:
    import time

    from engine.node import NodeIdentity, has_ended

    store = channel.parent / "s.sqlite3"
    running = Database.open(
        store, Cipher(base64.b64decode(STORE_KEY)), node=NodeIdentity.this_process("ward-a")
    )  # this test process plays the running engine
    with running.transaction():
        running.register_node(time.time(), time.time() + 60, has_ended)
    running.close()
    refused(run(channel, store, "--node-name", "ward-a"), "run", "node name 'ward-a' is in use")
    refused(run(channel, store, "--lease-seconds", "0.5"), "run", "--lease-seconds must be at least 1")
