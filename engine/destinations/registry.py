"""The one place the core learns destination types: entry points of ``courier.destinations``.

Each entry point is named after a destination type and points at a
:class:`~engine.destinations.plugin.DestinationPlugin` (the four built-ins are declared in
``setup.cfg`` like any third-party package). Listing the types reads installed metadata only;
a plugin is imported the first time it is asked for, and kept. One that cannot be loaded is a
:class:`~engine.errors.ConfigError` naming it, in one line.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError
from engine.spec import Problem, Spec

if TYPE_CHECKING:
    from engine.destinations.base import Destination
    from engine.destinations.plugin import DestinationPlugin

GROUP = "courier.destinations"
COMMANDS_GROUP = "courier.commands"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, entry)  # the first on sys.path wins, as imports do
    return found


def destination_types() -> tuple[str, ...]:
    """Every installed destination type, sorted (no plugin is imported)."""
    return tuple(sorted(_entry_points()))


@functools.cache
def _load(type_: str) -> DestinationPlugin:
    from engine.destinations.plugin import DestinationPlugin

    entry = _entry_points()[type_]
    try:
        plugin = entry.load()
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(
            f"destination plugin {type_!r} ({entry.value}) cannot be loaded: {detail}"
        ) from None
    if not isinstance(plugin, DestinationPlugin) or plugin.kind != type_:
        raise ConfigError(
            f"destination plugin {type_!r} ({entry.value}) is not a DestinationPlugin of kind {type_!r}"
        )
    return plugin


def plugin_for(type_: str) -> DestinationPlugin | None:
    """The plugin of a destination type, or None when none is installed under that name."""
    return _load(type_) if type_ in _entry_points() else None


def plugin(type_: str) -> DestinationPlugin:
    """The plugin of a type the channel check accepted (KeyError otherwise)."""
    found = plugin_for(type_)
    if found is None:
        raise KeyError(type_)
    return found


def plugins() -> dict[str, DestinationPlugin]:
    """Every installed plugin by type (imports them all)."""
    return {type_: plugin(type_) for type_ in destination_types()}


def destination_class(type_: str) -> type[Destination]:
    return plugin(type_).destination


def destination_classes() -> dict[str, type[Destination]]:
    """Every installed Destination class by type (imports every plugin)."""
    return {type_: found.destination for type_, found in plugins().items()}


def forget() -> None:
    """Read the entry points again on next use (after installing a plugin in-process)."""
    _entry_points.cache_clear()
    _load.cache_clear()


def commands() -> dict[str, str]:
    """``courier <name>`` commands the plugins add: name → module (nothing is imported)."""
    found: dict[str, str] = {}
    for entry in entry_points(group=COMMANDS_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def payload_spec_for(type_: str) -> Spec | None:
    """The spec of the payload a mapping must produce for this destination type, or None."""
    found = plugin_for(type_)
    return found.payload_spec if found is not None else None


def settings_specs() -> dict[str, Spec]:
    """Every known settings spec by destination type (the discriminator's variants)."""
    return {type_: found.settings_spec for type_, found in plugins().items()}


def settings_problems(type_: str, settings: Mapping[str, Any], given: Mapping[str, Any]) -> list[Problem]:
    """Rules across one destination's settings (``Destination.settings_problems``); ``given``
    is the table as written, to tell a ``*_file`` secret that was not read from an absent one."""
    found = plugin_for(type_)
    if found is None:
        return []
    named = set(given) | {key.removesuffix("_file") for key in given}
    return found.destination.settings_problems(settings, named)
