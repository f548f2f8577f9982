"""The vendors' webhooks a running engine serves, one URL per channel and destination.

* ``qliq/<channel>/<destination>/replies`` (``.../<reply_webhook_token>/replies`` when the
  destination has a path token): Qliq replies, encrypted for ``reply_key_file``;
* ``medallies/<channel>/<destination>/dsn``: delivery status notifications;
* ``medallies/<channel>/<destination>/inbound``: inbound Direct messages, filed as MDM^T02
  in the channel's ``[status_reports]`` outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import requests
from twisted.web.resource import Resource

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery import StatusTracker
from engine.errors import ConfigError
from engine.status import qliq_keys
from engine.status.medallies_inbound import DSNResource, InboundResource
from engine.status.qliq_replies import (
    QliqReplyApi,
    QliqReplySettings,
    ReplyInbox,
    ReplyPoller,
    ReplyWebhook,
)
from engine.status.reporter import StatusReporter
from engine.status.webhooks import BasicAuth
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
    return ReplyInbox(store, reporter, reactor, QliqReplyApi(requests.Session(), settings))


def qliq_reply_route(channel: Channel, config: DestinationConfig, inbox: ReplyInbox) -> dict[str, Resource]:
    """The reply webhook of one Qliq destination, when it has a ``reply_key_file``."""
    s = config.settings
    if not s.get("reply_key_file"):
        return {}
    try:
        key = qliq_keys.load_private_key(s["reply_key_file"], qliq_keys.passphrase_from_env())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"channel {channel.name}, destination {config.name}: cannot load "
            f"reply_key_file {s['reply_key_file']}: {exc}"
        ) from None
    password = s.get("reply_webhook_password")
    auth = BasicAuth(s["reply_webhook_user"], password) if password else None
    token = s.get("reply_webhook_token")
    if auth is None and not token:
        log.warning(
            "Qliq reply webhook of %s/%s has neither a path token nor Basic auth", channel.name, config.name
        )
    path = f"qliq/{channel.name}/{config.name}" + (f"/{token}" if token else "") + "/replies"
    return {path: ReplyWebhook(inbox, key, auth)}


def medallies_routes(
    reactor, channel: Channel, config: DestinationConfig, reporter: StatusReporter, tracker: StatusTracker
) -> dict[str, Resource]:
    """DSN and inbound webhooks of one MedAllies destination, when it has a ``webhook_secret``."""
    secret = config.settings.get("webhook_secret")
    if not secret:
        return {}
    auth = BasicAuth(config.settings["webhook_user"], secret)
    base = f"medallies/{channel.name}/{config.name}"
    found: dict[str, Resource] = {f"{base}/dsn": DSNResource(tracker, auth, config.name)}
    if channel.status_reports is not None:
        found[f"{base}/inbound"] = InboundResource(channel.name, reporter, reactor, auth)
    else:
        log.warning(
            "channel %s has no [status_reports]: MedAllies inbound messages are not served", channel.name
        )
    return found


def webhook_routes(
    reactor,
    channels: Sequence[Channel],
    store: Store,
    reporter: StatusReporter,
    tracker: StatusTracker,
    *,
    serve: bool,
) -> tuple[dict[str, Resource], list[ReplyPoller]]:
    """Every channel's webhook resources (URL path → resource, when ``serve``), and the Qliq
    reply pollers (``get_replies``, the fallback when the webhook is down)."""
    found: dict[str, Resource] = {}
    pollers: list[ReplyPoller] = []
    for channel in channels:
        for config in channel.destinations:
            if config.type == "qliq" and channel.status_reports is None:
                log.warning("channel %s has no [status_reports]: Qliq replies are not fetched", channel.name)
            elif config.type == "qliq":
                inbox = reply_inbox(reactor, channel, config, store, reporter)
                if serve:
                    found.update(qliq_reply_route(channel, config, inbox))
                if config.settings.get("poll_replies_s"):
                    pollers.append(ReplyPoller(inbox, every_s=config.settings["poll_replies_s"]))
            elif config.type == "medallies" and serve:
                found.update(medallies_routes(reactor, channel, config, reporter, tracker))
    return found, pollers
