"""Destinations: mapped payload → one vendor's HTTPS API → a classified :class:`SendResult`.

Each destination type is a plugin (:mod:`engine.destinations.plugin`), one folder per vendor,
found through the entry points :mod:`engine.destinations.registry` reads. Each
:class:`Destination` class declares ``settings_spec`` (the channel's
``[destinations.settings]``) and ``payload_spec`` (the fields a mapping must or may produce).
See :mod:`engine.destinations.base` for the interface.
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

__all__ = [
    "Destination",
    "DestinationError",
    "InvalidParameter",
    "Outcome",
    "Problem",
    "SendResult",
    "StaticToken",
    "StatusUpdate",
    "TokenProvider",
]
