"""Qliq replies reach the engine two ways: the reply webhook and the ``get_replies`` poller.

* ``qliq/<channel>/<destination>/replies`` (``.../<reply_webhook_token>/replies`` when the
  destination has a path token): Qliq replies, encrypted for ``reply_key_file``, authenticated
  by the path token, Basic auth, or both (never neither);
* every ``poll_replies_s``, ``get_replies``: the fallback when the webhook is down.

Both file the reply as MDM^T02 in the channel's ``[status_reports]`` outbox.
"""

from __future__ import annotations

import logging

import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.destinations.plugin import WebhookContext, Webhooks
from engine.destinations.qliq import keys as qliq_keys
from engine.destinations.qliq.replies import (
    QliqReplyApi,
    QliqReplySettings,
    ReplyInbox,
    ReplyPoller,
    ReplyWebhook,
)
from engine.errors import ConfigError
from engine.status.routes import bounds, refuse_problems
from engine.status.webhooks import BasicAuth, Route

log = logging.getLogger(__name__)


def reply_inbox(context: WebhookContext) -> ReplyInbox:
    """Where one Qliq destination's replies are filed (its channel's outbox)."""
    s = context.config.settings
    settings = QliqReplySettings(
        channel=context.channel.name,
        base_url=s["base_url"],
        api_key=s["api_key"],
        sender=s["reply_sender"],
        timeout_s=s["read_timeout_s"],
        verify=str(s["ca_file"]) if s.get("ca_file") else True,
    )
    api = QliqReplyApi(requests.Session(), settings)
    return ReplyInbox(context.store, context.reporter, context.reactor, api, context.base_path)


def serves_reply_webhook(channel: Channel, config: DestinationConfig, serve: bool) -> bool:
    """Whether the destination gets a reply webhook: webhooks served, replies filed somewhere
    (``[status_reports]``) and a ``reply_key_file`` to read them with."""
    return serve and channel.status_reports is not None and bool(config.settings.get("reply_key_file"))


def load_reply_key(channel: Channel, config: DestinationConfig, serve: bool) -> RSAPrivateKey | None:
    """The reply webhook's private key (``DestinationPlugin.preload``: read away from the
    reactor, as a passphrase's key derivation takes a while), or None without a webhook."""
    if not serves_reply_webhook(channel, config, serve):
        return None
    s = config.settings
    try:
        return qliq_keys.load_private_key(s["reply_key_file"], qliq_keys.passphrase_from_env())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"channel {channel.name}, destination {config.name}: cannot load "
            f"reply_key_file {s['reply_key_file']}: {exc}"
        ) from None


def reply_route(context: WebhookContext, inbox: ReplyInbox) -> list[Route]:
    """The reply webhook of one Qliq destination, with the key :func:`load_reply_key` read;
    raises ConfigError when it has neither a path token nor a Basic password."""
    channel, config = context.channel, context.config
    s = config.settings
    if not serves_reply_webhook(channel, config, context.serve):
        return []
    refuse_problems(channel, config)
    if context.preloaded is None:
        raise ConfigError(f"channel {channel.name}, destination {config.name}: reply key not loaded")
    password = s.get("reply_webhook_password")
    route = Route(
        f"{inbox.name}/replies",
        ReplyWebhook(inbox, context.preloaded),
        basic=BasicAuth(s["reply_webhook_user"], password) if password else None,
        token=s.get("reply_webhook_token") or None,
        **bounds(s),
    )
    return [route]


def reply_webhooks(context: WebhookContext) -> Webhooks:
    """The reply webhook (when served) and the reply poller (when ``poll_replies_s``)."""
    if context.channel.status_reports is None:
        log.warning("channel %s has no [status_reports]: Qliq replies are not fetched", context.channel.name)
        return Webhooks()
    inbox = reply_inbox(context)
    routes = reply_route(context, inbox)
    every_s = context.config.settings.get("poll_replies_s")
    return Webhooks(routes, [ReplyPoller(inbox, every_s=every_s)] if every_s else [])
