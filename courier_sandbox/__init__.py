"""Vendor sandboxes: the four secure-messaging APIs served on loopback, as the documents say,
and a generic JSON receiver for ``type = "http"`` (:mod:`courier_sandbox.receiver`).

There is no internet here, so Courier ships real HTTP servers (Twisted web) that behave like
Qliq, conneQt, MedAllies Direct and KPN Healthcare Messenger, built from the vendor
documents in ``shared/seeds`` rather than from Courier's clients. Each sandbox records what
it received, can be made to misbehave (:mod:`courier_sandbox.faults`), and is driven through
a JSON control API under ``/_sandbox/`` (:mod:`courier_sandbox.base`).

Start them all with :func:`start_sandboxes`; they accept the :class:`Credentials` they are
given, which ``courier run --sandbox`` and ``courier sandbox`` make at random once and keep in
``var/sandbox/credentials.json`` (:mod:`courier_sandbox.credentials`): no sandbox has a public
credential. Default ports: see :data:`DEFAULT_PORTS`; pass 0 for a free one.
For HTTPS, make a CA and server certificate with :func:`courier_sandbox.certs.make_certificates`
and pass ``tls=paths.server_tls()``; clients verify against ``paths.ca_cert``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from courier_sandbox.base import ServerTLS, VendorSandbox
from courier_sandbox.conneqt import ConneqtSandbox
from courier_sandbox.credentials import Credentials
from courier_sandbox.kpn import KpnSandbox
from courier_sandbox.medallies import MedAlliesSandbox
from courier_sandbox.qliq import QliqSandbox
from courier_sandbox.receiver import HttpReceiverSandbox

__all__ = [
    "DEFAULT_PORTS",
    "Credentials",
    "Sandboxes",
    "ServerTLS",
    "start_sandboxes",
]

DEFAULT_PORTS = {"qliq": 18441, "conneqt": 18442, "medallies": 18443, "kpn": 18444, "http": 18445}


def default_base_urls(ports: Mapping[str, int] | None = None, host: str = "127.0.0.1") -> dict[str, str]:
    """Each sandbox's scheme://host:port, known before they start: ``ports`` over
    :data:`DEFAULT_PORTS`."""
    return {name: f"http://{host}:{port}" for name, port in {**DEFAULT_PORTS, **(ports or {})}.items()}


@dataclass
class Sandboxes:
    """The running sandboxes; each has ``port``, ``base_url``, ``state``, ``faults``."""

    qliq: QliqSandbox
    conneqt: ConneqtSandbox
    medallies: MedAlliesSandbox
    kpn: KpnSandbox
    http: HttpReceiverSandbox
    credentials: Credentials

    def __iter__(self) -> Iterator[VendorSandbox]:
        return iter((self.qliq, self.conneqt, self.medallies, self.kpn, self.http))

    def base_urls(self) -> dict[str, str]:
        """Each sandbox's scheme://host:port by vendor name."""
        return {sandbox.name: sandbox.base_url for sandbox in self}

    def api_urls(self) -> dict[str, str]:
        """What to configure clients with: each vendor's API root, plus KPN's OAuth root."""
        return {**{sandbox.name: sandbox.api_url for sandbox in self}, "kpn_oauth": self.kpn.oauth_url}

    def stop(self) -> Deferred[Any]:
        return DeferredList([sandbox.stop() for sandbox in self], consumeErrors=True)


@inlineCallbacks
def start_sandboxes(
    reactor: Any,
    *,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    tls: ServerTLS | None = None,
    credentials: Credentials,
    clock: IReactorTime | None = None,
    seed: int = 0,
    state_dir: Path | None = None,
) -> Deferred[Sandboxes]:
    """Listen with all the sandboxes, accepting ``credentials``; fires with :class:`Sandboxes`.

    ``ports`` overrides :data:`DEFAULT_PORTS` per vendor name (0 = any free port);
    ``clock`` drives status transitions and token expiry (default: the reactor);
    ``seed`` makes fault rates repeatable; with ``state_dir`` each sandbox starts from what it
    saved there (``<vendor>.json``) and keeps saving (:mod:`courier_sandbox.persistence`).
    """
    chosen = {**DEFAULT_PORTS, **(ports or {})}
    common = {"credentials": credentials, "clock": clock, "seed": seed}
    sandboxes = Sandboxes(
        qliq=QliqSandbox(reactor, **common),
        conneqt=ConneqtSandbox(reactor, **common),
        medallies=MedAlliesSandbox(reactor, **common),
        kpn=KpnSandbox(reactor, **common),
        http=HttpReceiverSandbox(reactor, **common),
        credentials=credentials,
    )
    try:
        for sandbox in sandboxes:
            if state_dir is not None:
                sandbox.keep_state_in(state_dir / f"{sandbox.name}.json")
            yield sandbox.listen(host, chosen[sandbox.name], tls)
    except Exception:
        yield sandboxes.stop()
        raise
    return sandboxes
