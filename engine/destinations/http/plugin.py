"""The generic HTTP destination: sends only (no status API, webhooks or tokens).

Under ``courier run --sandbox`` a destination whose ``url`` is on the receiver sandbox
(``courier_sandbox.receiver``) takes its credentials for the secret variables left unset.
"""

from engine.destinations.http.destination import JsonHttpDestination
from engine.destinations.plugin import DestinationPlugin, SandboxHook

PLUGIN = DestinationPlugin(
    destination=JsonHttpDestination,
    sandbox=SandboxHook(
        url_setting="url",
        secret_settings={
            "password": "http_password",
            "token": "http_token",
            "signing_secret": "http_signing_secret",
            "auth_value": "http_api_key",
        },
    ),
)
