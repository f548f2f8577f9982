"""POSTing from a sandbox to a client's webhook without blocking the reactor."""

from __future__ import annotations

from io import BytesIO

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers


@inlineCallbacks
def post(
    reactor: IReactorTime, url: str, body: bytes, headers: dict[str, str], timeout_s: float = 10
) -> Deferred[tuple[int, bytes]]:
    """POST ``body`` to ``url``; fires with (status code, response body)."""
    agent = Agent(reactor, connectTimeout=timeout_s)
    request = agent.request(
        b"POST",
        url.encode(),
        Headers({k: [v] for k, v in headers.items()}),
        FileBodyProducer(BytesIO(body), cooperator=_cooperator(reactor)),
    )
    request.addTimeout(timeout_s, reactor)
    response = yield request
    content = yield readBody(response)
    return response.code, content


def _cooperator(reactor: IReactorTime) -> Cooperator:
    """A cooperator driven by the given reactor, so no global reactor is touched."""
    return Cooperator(scheduler=lambda work: reactor.callLater(0, work))
