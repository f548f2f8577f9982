"""The KPN OAuth token: one per client id, stored encrypted (:mod:`engine.delivery.tokens`),
written by ``courier kpn authorize``."""

from __future__ import annotations

from engine.channel.config import Channel
from engine.channel.config import Destination as DestinationConfig
from engine.delivery.tokens import StoredToken, StoredTokens


def token_key(client_id: str) -> str:
    """KPN tokens belong to the OAuth client: channels sharing a client id share its token."""
    return f"kpn:{client_id}"


def stored_token(channel: Channel, config: DestinationConfig, tokens: StoredTokens) -> StoredToken:
    return tokens.get(token_key(config.settings["client_id"]))
