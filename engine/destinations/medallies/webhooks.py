"""MedAllies calls the engine back, with Basic auth (``webhook_user``/``webhook_secret``):

* ``medallies/<channel>/<destination>/dsn``: delivery status notifications;
* ``medallies/<channel>/<destination>/inbound``: inbound Direct messages, filed as MDM^T02
  in the channel's ``[status_reports]`` outbox.
"""

from __future__ import annotations

import logging

from engine.destinations.medallies.destination import DSN_MAX_BODY_BYTES
from engine.destinations.medallies.inbound import DSNResource, InboundResource
from engine.destinations.plugin import WebhookContext, Webhooks
from engine.status.routes import bounds, refuse_problems
from engine.status.webhooks import BasicAuth, Route

log = logging.getLogger(__name__)


def medallies_webhooks(context: WebhookContext) -> Webhooks:
    """DSN and inbound webhooks of one MedAllies destination, when served and it has a
    ``webhook_secret``."""
    channel, config = context.channel, context.config
    secret = config.settings.get("webhook_secret")
    if not context.serve or not secret:
        return Webhooks()
    refuse_problems(channel, config)
    auth = BasicAuth(config.settings["webhook_user"], secret)
    limits = bounds(config.settings)
    dsn_limits = {**limits, "max_body_bytes": DSN_MAX_BODY_BYTES}
    base = context.base_path
    found = [Route(f"{base}/dsn", DSNResource(context.tracker, config.name), auth, **dsn_limits)]
    if channel.status_reports is not None:
        inbound = InboundResource(channel.name, context.reporter, context.reactor)
        found.append(Route(f"{base}/inbound", inbound, auth, **limits))
    else:
        log.warning(
            "channel %s has no [status_reports]: MedAllies inbound messages are not served", channel.name
        )
    return Webhooks(found)
