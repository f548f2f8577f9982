"""Who this engine process is among the nodes that share one store.

A node's *name* (``courier run --node-name``, default: the host name) stays the same across
restarts; every start makes a new *incarnation* (the name and a random suffix), and the
incarnation is what holds leases: a SENDING delivery, a channel's outbox, a job's turn.

The ``nodes`` table keeps, per name, the incarnation alive now, its host, boot and process
id, and until when its heartbeat vouches for it. A node that starts under a name whose
previous incarnation has surely ended (it ran on this same host, and its process id is gone
or the host rebooted since: :func:`has_ended`) takes back at once what that incarnation held,
so a restarted single node resumes its sends without waiting for their leases to run out. A
previous incarnation that is merely no longer vouched for keeps its leases until they run
out (it may only be stalled). One still vouched for and not surely ended (another host, a
live process) makes the start fail: two processes under one name would each believe the
other's leases are their own.

The heartbeat and the named leases that run on the reactor are in :mod:`engine.leases`
(this module imports no Twisted: the command line reads its defaults).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LEASE_S = 30.0
"""How long a lease lasts unless renewed: the longest a dead node's work waits for another."""
RENEW_FRACTION = 3
"""Leases are renewed every ``lease_s / RENEW_FRACTION``: two renewals may fail before one expires."""
TURN_SHARE = 0.9
"""A periodic job's turn (``engine.leases.take_turn``) lasts this share of its period, so the
next pass of any node can take the next one."""


@dataclass(frozen=True)
class NodeIdentity:
    """This process among the nodes: a stable ``name`` and this start's ``incarnation``."""

    name: str
    incarnation: str
    host: str
    pid: int
    boot: str = ""
    """The host's boot id: a process of an earlier boot has ended, whatever its pid is now."""

    @classmethod
    def this_process(cls, name: str | None = None) -> NodeIdentity:
        host = socket.gethostname()
        name = name or host
        return cls(name, f"{name}.{secrets.token_hex(4)}", host, os.getpid(), boot_id())


def boot_id() -> str:
    """This boot of the host (Linux), or "" where it cannot be read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def has_ended(host: str, boot: str, pid: int) -> bool:
    """Whether the process ``pid`` of boot ``boot`` on ``host`` has surely ended; False whenever
    unsure.

    Only decidable on the same host. After a reboot every earlier process has ended. A zombie
    (killed, not yet reaped) has ended. The engine started again inside the same process (tests
    do) counts as ended too.
    """
    if host != socket.gethostname():
        return False
    if boot and boot != boot_id():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
