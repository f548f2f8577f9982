"""MedAllies Direct: sends, polls until DISPATCHED, DSN and inbound Direct webhooks."""

from engine.destinations.medallies.destination import MedAlliesDestination
from engine.destinations.medallies.inbound import DSNResource, InboundResource
from engine.destinations.medallies.webhooks import medallies_webhooks
from engine.destinations.plugin import DestinationPlugin, SandboxHook, StatusPolling
from engine.store.base import DELIVERED, ERROR, READ

PLUGIN = DestinationPlugin(
    destination=MedAlliesDestination,
    # a later DISPLAYED still arrives through the DSN webhook (StatusTracker.apply_update)
    polling=StatusPolling(final_states=frozenset({DELIVERED, READ, ERROR})),
    webhooks=medallies_webhooks,
    sandbox=SandboxHook(
        webhook_settings={DSNResource: "dsn_url", InboundResource: "inbound_url"},
        secret_settings={"password": "medallies_password", "webhook_secret": "medallies_webhook_secret"},
    ),
)
