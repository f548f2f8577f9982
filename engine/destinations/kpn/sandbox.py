"""``courier run --sandbox`` for KPN: a destination without a token is authorised at start
(the sandbox approves at once), as ``courier kpn authorize --auto`` would."""

from __future__ import annotations

import logging

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool

from engine.delivery.tokens import missing_token
from engine.destinations.plugin import SandboxHook

log = logging.getLogger(__name__)


@inlineCallbacks
def authorize_in_sandbox(reactor, queue, aimed: bool) -> Deferred[None]:
    from engine.destinations.kpn.commands import authorize

    stored = missing_token(queue.destination)
    if stored is None:
        return
    token = yield deferToThreadPool(
        reactor,
        reactor.getThreadPool(),
        authorize,
        queue.destination,
        auto=True,
        timeout_s=10.0,
        show=log.info,
    )
    yield stored.save(token)
    log.warning("queue %s: authorised with the KPN sandbox", queue.name)


SANDBOX = SandboxHook(start=authorize_in_sandbox, secret_settings={"client_secret": "kpn_client_secret"})
