"""The fixed demo credentials the sandboxes accept, so example channels run unconfigured.

They are public test values, not secrets: never reuse them against a real vendor.

=============  ==============================================================================
Qliq           ``api_key`` ``sandbox-qliq-key``
conneQt        ``ApiKey`` ``sandbox-conneqt-key``; access code ``SANDBOX-ACCESS`` (exchanged
               for an AccessToken); ApiKey ``sandbox-conneqt-unauthorised`` is valid but not
               authorised (403)
MedAllies      Basic ``courier`` / ``sandbox-medallies-password`` to send; Basic ``readonly`` /
               ``sandbox-readonly-password`` is valid but forbidden (403); the sandbox signs
               its own POSTs (DSN, inbound) with Basic ``medallies`` /
               ``sandbox-inbound-secret`` (the shared secret the vendor gives MedAllies)
KPN            OAuth client ``sandbox-kpn-client`` / ``sandbox-kpn-secret``
=============  ==============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    """What each sandbox accepts (and, for webhooks, sends)."""

    qliq_api_key: str = "sandbox-qliq-key"
    conneqt_api_key: str = "sandbox-conneqt-key"
    conneqt_unauthorised_api_key: str = "sandbox-conneqt-unauthorised"
    conneqt_access_code: str = "SANDBOX-ACCESS"
    medallies_user: str = "courier"
    medallies_password: str = "sandbox-medallies-password"
    medallies_readonly_user: str = "readonly"
    medallies_readonly_password: str = "sandbox-readonly-password"
    medallies_webhook_user: str = "medallies"
    medallies_webhook_secret: str = "sandbox-inbound-secret"
    kpn_client_id: str = "sandbox-kpn-client"
    kpn_client_secret: str = "sandbox-kpn-secret"


DEMO_CREDENTIALS = Credentials()
