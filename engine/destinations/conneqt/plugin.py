"""conneQt: sends, polls at most four times a day and around the expiry, an AccessToken from
the store (or exchanged from an access code at start), ``courier conneqt exchange``."""

from engine.destinations.conneqt.destination import ConneqtDestination
from engine.destinations.conneqt.polling import POLLING
from engine.destinations.conneqt.tokens import exchange_access_code, stored_token
from engine.destinations.plugin import DestinationPlugin, SandboxHook

PLUGIN = DestinationPlugin(
    destination=ConneqtDestination,
    polling=POLLING,
    token=stored_token,
    on_start=exchange_access_code,
    sandbox=SandboxHook(secret_settings={"api_key": "conneqt_api_key", "access_code": "conneqt_access_code"}),
)
