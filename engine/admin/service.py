"""The admin endpoint as a part of the running engine: its listener and readiness probe are
services under the engine's, started and stopped with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twisted.web.resource import Resource

from engine.admin import server
from engine.admin.console import EngineView
from engine.admin.health import Readiness
from engine.admin.options import Operators
from engine.admin.site import build_admin_site
from engine.service import Engine, ListenerService
from engine.store import Store
from engine.tls import TLSSettings


@dataclass(frozen=True)
class AdminSettings:
    endpoint: str
    operators: Operators
    tls: TLSSettings | None = None
    max_held_s: float = 600.0


def bound(listener: ListenerService) -> bool:
    """Whether a listener's port is bound and still listening."""
    return listener.port is not None and bool(getattr(listener.port, "connected", True))


def listeners_bound(engine: Engine) -> dict[str, bool]:
    """Each channel's MLLP listener, and the webhooks: bound or not."""
    found = {name: bound(listener) for name, listener in engine.listeners.items()}
    if engine.webhooks is not None:
        found["webhooks"] = bound(engine.webhooks)
    return found


def engine_view(engine: Engine) -> EngineView:
    return EngineView(
        listeners=lambda: {name: bound(listener) for name, listener in engine.listeners.items()},
        refusals=engine.metrics.refusals,
        destinations=lambda: {
            name: (queue.channel, queue.config.type) for name, queue in engine.deliveries.queues.items()
        },
        wake=lambda destination: engine.deliveries.wake((destination,)),
        reload=None if engine.load_channels is None else engine.reload,
    )


def serve_admin(
    engine: Engine, store: Store, settings: AdminSettings, extra: Mapping[bytes, Resource] = {}
) -> ListenerService:
    """The admin listener and its readiness probe, as services of the engine (call before
    ``engine.start()``); ``extra`` mounts more resources behind the operators' check."""
    reactor = engine.reactor
    readiness = Readiness(store, reactor, lambda: listeners_bound(engine), settings.max_held_s)
    readiness.setServiceParent(engine.service)
    secure = settings.tls is not None or settings.endpoint.startswith("ssl:")
    root = build_admin_site(
        reactor, store, settings.operators, readiness, engine_view(engine), secure=secure, extra=extra
    )
    listener = ListenerService("admin", lambda: server.listen(reactor, settings.endpoint, root, settings.tls))
    listener.setServiceParent(engine.service)
    return listener
