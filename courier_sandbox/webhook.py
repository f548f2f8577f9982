"""POSTing from a sandbox to a client's webhook without blocking the reactor."""

from __future__ import annotations

from io import BytesIO

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers


@inlineCallbacks
def post(
    reactor: IReactorTime, url: str, body: bytes, headers: dict[str, str], timeout_s: float = 10
) -> Deferred[int]:
    """POST ``body`` to ``url``; fires with the response status code."""
    agent = Agent(reactor, connectTimeout=timeout_s)
    request = agent.request(
        b"POST",
        url.encode(),
        Headers({k: [v] for k, v in headers.items()}),
        FileBodyProducer(BytesIO(body), cooperator=_cooperator(reactor)),
    )
    request.addTimeout(timeout_s, reactor)
    response = yield request
    done: Deferred[None] = Deferred()
    response.deliverBody(_Discard(done))
    yield done
    return response.code


class _Discard(Protocol):
    """Reads and drops a webhook's response body: only its status code matters."""

    def __init__(self, done: Deferred[None]) -> None:
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(None)


def _cooperator(reactor: IReactorTime) -> Cooperator:
    """A cooperator driven by the given reactor, so no global reactor is touched."""
    return Cooperator(scheduler=lambda work: reactor.callLater(0, work))
