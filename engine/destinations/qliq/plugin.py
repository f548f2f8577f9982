"""Qliq secure messaging: sends, ``message_status`` polls until READ, replies by webhook or
``get_replies``, conversations for follow-ups, ``courier qliq keys``."""

from engine.destinations.plugin import DestinationPlugin, StatusPolling
from engine.destinations.qliq.destination import QliqDestination
from engine.destinations.qliq.sandbox import SANDBOX
from engine.destinations.qliq.webhooks import load_reply_key, reply_webhooks
from engine.store.base import ERROR, READ

PLUGIN = DestinationPlugin(
    destination=QliqDestination,
    polling=StatusPolling(final_states=frozenset({READ, ERROR})),
    webhooks=reply_webhooks,
    preload=load_reply_key,
    conversations=True,
    sandbox=SANDBOX,
)
