"""The vendors' webhooks a running engine serves, one URL per channel and destination.

* ``qliq/<channel>/<destination>/replies`` (``.../<reply_webhook_token>/replies`` when the
  destination has a path token): Qliq replies, encrypted for ``reply_key_file``;
* ``medallies/<channel>/<destination>/dsn``: delivery status notifications;
* ``medallies/<channel>/<destination>/inbound``: inbound Direct messages, filed as MDM^T02
  in the channel's ``[status_reports]`` outbox.

Each route carries its credentials (Basic auth, a path token, or both; never neither), its
body limit and its ``webhook_allow_from`` networks, for the server to check before reading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.channel.registry import settings_problems
from engine.delivery import StatusTracker
from engine.destinations.medallies.destination import DSN_MAX_BODY_BYTES
from engine.destinations.medallies.inbound import DSNResource, InboundResource
from engine.destinations.qliq import keys as qliq_keys
from engine.destinations.qliq.replies import (
    QliqReplyApi,
    QliqReplySettings,
    ReplyInbox,
    ReplyPoller,
    ReplyWebhook,
)
from engine.errors import ConfigError
from engine.status.reporter import StatusReporter
from engine.status.webhooks import BasicAuth, Route, networks
from engine.store import Store

log = logging.getLogger(__name__)


def reply_inbox(
    reactor, channel: Channel, config: DestinationConfig, store: Store, reporter: StatusReporter
) -> ReplyInbox:
    """Where one Qliq destination's replies are filed (its channel's outbox)."""
    s = config.settings
    settings = QliqReplySettings(
        channel=channel.name,
        base_url=s["base_url"],
        api_key=s["api_key"],
        sender=s["reply_sender"],
        timeout_s=s["read_timeout_s"],
        verify=str(s["ca_file"]) if s.get("ca_file") else True,
    )
    api = QliqReplyApi(requests.Session(), settings)
    return ReplyInbox(store, reporter, reactor, api, f"qliq/{channel.name}/{config.name}")


def qliq_reply_route(channel: Channel, config: DestinationConfig, inbox: ReplyInbox) -> list[Route]:
    """The reply webhook of one Qliq destination, when it has a ``reply_key_file``; raises
    ConfigError when it has neither a path token nor a Basic password."""
    s = config.settings
    if not s.get("reply_key_file"):
        return []
    _refuse_problems(channel, config)
    try:
        key = qliq_keys.load_private_key(s["reply_key_file"], qliq_keys.passphrase_from_env())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"channel {channel.name}, destination {config.name}: cannot load "
            f"reply_key_file {s['reply_key_file']}: {exc}"
        ) from None
    password = s.get("reply_webhook_password")
    route = Route(
        f"{inbox.name}/replies",
        ReplyWebhook(inbox, key),
        basic=BasicAuth(s["reply_webhook_user"], password) if password else None,
        token=s.get("reply_webhook_token") or None,
        **_bounds(s),
    )
    return [route]


def medallies_routes(
    reactor, channel: Channel, config: DestinationConfig, reporter: StatusReporter, tracker: StatusTracker
) -> list[Route]:
    """DSN and inbound webhooks of one MedAllies destination, when it has a ``webhook_secret``."""
    secret = config.settings.get("webhook_secret")
    if not secret:
        return []
    _refuse_problems(channel, config)
    auth = BasicAuth(config.settings["webhook_user"], secret)
    base = f"medallies/{channel.name}/{config.name}"
    bounds = _bounds(config.settings)
    dsn_bounds = {**bounds, "max_body_bytes": DSN_MAX_BODY_BYTES}
    found = [Route(f"{base}/dsn", DSNResource(tracker, config.name), auth, **dsn_bounds)]
    if channel.status_reports is not None:
        inbound = InboundResource(channel.name, reporter, reactor)
        found.append(Route(f"{base}/inbound", inbound, auth, **bounds))
    else:
        log.warning(
            "channel %s has no [status_reports]: MedAllies inbound messages are not served", channel.name
        )
    return found


def _bounds(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "max_body_bytes": settings["webhook_max_body_bytes"],
        "allow_from": networks(settings.get("webhook_allow_from")),
    }


def _refuse_problems(channel: Channel, config: DestinationConfig) -> None:
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
) -> tuple[list[Route], list[ReplyPoller]]:
    """Every channel's webhook routes (when ``serve``), and the Qliq reply pollers
    (``get_replies``, the fallback when the webhook is down). Raises ConfigError for a route
    that would take anyone's POST."""
    found: list[Route] = []
    pollers: list[ReplyPoller] = []
    for channel in channels:
        for config in channel.destinations:
            if config.type == "qliq" and channel.status_reports is None:
                log.warning("channel %s has no [status_reports]: Qliq replies are not fetched", channel.name)
            elif config.type == "qliq":
                inbox = reply_inbox(reactor, channel, config, store, reporter)
                if serve:
                    found += qliq_reply_route(channel, config, inbox)
                if config.settings.get("poll_replies_s"):
                    pollers.append(ReplyPoller(inbox, every_s=config.settings["poll_replies_s"]))
            elif config.type == "medallies" and serve:
                found += medallies_routes(reactor, channel, config, reporter, tracker)
    return found, pollers
