"""KPN Healthcare Messenger: sends with an OAuth token from the store (``courier kpn
authorize``). KPN has no delivered/read state: ACCEPTED (SENT) is the last state we can know,
so a KPN delivery is never polled."""

from engine.destinations.kpn.destination import KpnDestination, account_rate
from engine.destinations.kpn.sandbox import SANDBOX
from engine.destinations.kpn.tokens import stored_token
from engine.destinations.plugin import DestinationPlugin

PLUGIN = DestinationPlugin(
    destination=KpnDestination,
    token=stored_token,
    account_rate=account_rate,
    sandbox=SANDBOX,
)
