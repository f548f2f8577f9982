"""Destinations: mapped payload → one vendor's HTTPS API → a classified :class:`SendResult`.

``REGISTRY`` maps a channel's destination ``type`` to its class; each class declares
``settings_spec`` (the channel's ``[destinations.settings]``) and ``payload_spec`` (the
fields a mapping must or may produce). See :mod:`engine.destinations.base` for the interface.
"""

from engine.destinations.base import (
    Destination,
    DestinationError,
    InvalidParameter,
    Outcome,
    Problem,
    SendResult,
    StaticToken,
    StatusUpdate,
    TokenProvider,
)
from engine.destinations.conneqt.destination import ConneqtDestination
from engine.destinations.kpn.destination import KpnDestination
from engine.destinations.medallies.destination import MedAlliesDestination
from engine.destinations.qliq.destination import QliqDestination

REGISTRY: dict[str, type[Destination]] = {
    cls.kind: cls for cls in (QliqDestination, ConneqtDestination, MedAlliesDestination, KpnDestination)
}

__all__ = [
    "REGISTRY",
    "ConneqtDestination",
    "Destination",
    "DestinationError",
    "InvalidParameter",
    "KpnDestination",
    "MedAlliesDestination",
    "Outcome",
    "Problem",
    "QliqDestination",
    "SendResult",
    "StaticToken",
    "StatusUpdate",
    "TokenProvider",
]
