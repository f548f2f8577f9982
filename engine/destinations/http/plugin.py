"""The generic HTTP destination: sends only (no status API, webhooks or tokens)."""

from engine.destinations.http.destination import JsonHttpDestination
from engine.destinations.plugin import DestinationPlugin

PLUGIN = DestinationPlugin(destination=JsonHttpDestination)
