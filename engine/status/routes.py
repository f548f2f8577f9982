"""The webhooks a running engine serves, one URL per channel and destination.

Each destination type declares its routes (``DestinationPlugin.webhooks``, under
``<type>/<channel>/<destination>/…``); this module collects them. Each route carries its
credentials (Basic auth, a path token, or both; never neither), its body limit and its
``webhook_allow_from`` networks, for the server to check before reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery import StatusTracker
from engine.destinations.registry import plugin, settings_problems
from engine.errors import ConfigError
from engine.status.reporter import StatusReporter
from engine.status.webhooks import Route, networks
from engine.store import Store


def bounds(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A route's body limit and allowed networks, from the shared webhook settings."""
    return {
        "max_body_bytes": settings["webhook_max_body_bytes"],
        "allow_from": networks(settings.get("webhook_allow_from")),
    }


def refuse_problems(channel: Channel, config: DestinationConfig) -> None:
    """What ``courier check`` reports, refused again for settings built in code."""
    given = {key: value for key, value in config.settings.items() if value}
    problems = settings_problems(config.type, config.settings, given)
    if problems:
        where = f"channel {channel.name}, destination {config.name}"
        raise ConfigError("\n".join(f"{where}: settings.{p.key}: {p.message}" for p in problems))


def webhook_routes(
    reactor,
    channels: Sequence[Channel],
    store: Store,
    reporter: StatusReporter,
    tracker: StatusTracker,
    *,
    serve: bool,
    preloaded: Mapping[str, Any] = {},
) -> tuple[list[Route], list[Any]]:
    """Every channel's webhook routes (when ``serve``), and the services that poll for the
    same traffic; ``preloaded``: by destination name, what its plugin read from disk
    beforehand. Raises ConfigError for a route that would take anyone's POST."""
    from engine.destinations.plugin import WebhookContext

    found: list[Route] = []
    pollers: list[Any] = []
    for channel in channels:
        for config in channel.destinations:
            factory = plugin(config.type).webhooks
            if factory is None:
                continue
            context = WebhookContext(
                reactor, channel, config, store, reporter, tracker, serve, preloaded.get(config.name)
            )
            webhooks = factory(context)
            found += webhooks.routes
            pollers += webhooks.pollers
    return found, pollers
