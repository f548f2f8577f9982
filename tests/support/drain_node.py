"""One engine node in a process of its own, for tests: it serves a channel's queues (built as
``courier run`` builds them, through :class:`engine.delivery.service.DeliveryService`) on a
shared store until none of the channel's deliveries is QUEUED or SENDING, then exits 0.

``python -m tests.support.drain_node STORE CHANNEL_FILE NODE_NAME``, with the store's key in
hex in ``DRAIN_NODE_KEY``. Destinations read the token ``test-token`` (KPN needs one).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.python.failure import Failure

from engine.channel.check import load_channels
from engine.channel.config import Channel
from engine.delivery.service import DeliveryService
from engine.destinations import StaticToken, TokenProvider
from engine.node import NodeIdentity
from engine.service import routes
from engine.store import Cipher, open_store
from engine.store.base import QUEUED, SENDING, Store


def serve(reactor, store: Store, channel: Channel, token: TokenProvider) -> DeliveryService:
    """The channel's queues on ``store``, built as ``courier run`` builds them and started;
    every destination reads ``token``. Call in the reactor thread."""
    service = DeliveryService(reactor=reactor, clock=reactor, store=store, lease_s=5.0)
    built_routes = routes(channel, time.time)
    for route in built_routes:
        route.destination.token_provider = token
    service.add(service.build_channel(channel, built_routes))
    service.startService()
    return service


@inlineCallbacks
def drain(location: str, channel_file: Path, name: str):
    (channel,) = load_channels([channel_file], env={})
    node = NodeIdentity(name, f"{name}.1", "test-host", os.getpid())
    key = bytes.fromhex(os.environ["DRAIN_NODE_KEY"])
    store = open_store(location, reactor=reactor, cipher=Cipher(key), durability="normal", node=node)
    yield store.start()
    service = serve(reactor, store, channel, StaticToken("test-token"))
    while True:
        waiting = 0
        for state in (QUEUED, SENDING):
            waiting += len((yield store.list_deliveries(channel=channel.name, state=state, limit=1)))
        if not waiting:
            break
        yield task.deferLater(reactor, 0.1, lambda: None)
    yield service.stopService()
    yield store.close()


def main(argv: list[str]) -> int:
    location, channel_file, name = argv
    exit_code: list[int] = []

    def stop(code: int) -> None:
        exit_code.append(code)
        reactor.stop()

    def failed(failure: Failure) -> None:
        print(failure.getTraceback(), file=sys.stderr)
        stop(1)

    def start() -> None:
        drain(location, Path(channel_file), name).addCallbacks(lambda _: stop(0), failed)

    reactor.callWhenRunning(start)
    reactor.run()
    return exit_code[0] if exit_code else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
