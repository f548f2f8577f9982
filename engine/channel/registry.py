"""Look up what a destination type declares, without importing every vendor at load time.

``engine.destinations.REGISTRY`` maps a type (``qliq``) to its class, which declares
``settings_spec`` and ``payload_spec``; it is imported on first use, so that reading a
channel file does not load every vendor module. For a type it does not know these return None.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from engine.spec import Problem, Spec

DESTINATION_TYPES = ("conneqt", "kpn", "medallies", "qliq")


def _registry() -> dict[str, Any]:
    return importlib.import_module("engine.destinations").REGISTRY


def _spec(type_: str, attribute: str) -> Spec | None:
    spec = getattr(_registry().get(type_), attribute, None)
    return spec if isinstance(spec, Spec) else None


def settings_spec_for(type_: str) -> Spec | None:
    """The spec of a destination type's ``[destinations.settings]``, or None if unknown."""
    return _spec(type_, "settings_spec")


def payload_spec_for(type_: str) -> Spec | None:
    """The spec of the payload a mapping must produce for this destination type, or None."""
    return _spec(type_, "payload_spec")


def settings_specs() -> dict[str, Spec]:
    """Every known settings spec by destination type (the discriminator's variants)."""
    found = {t: settings_spec_for(t) for t in DESTINATION_TYPES}
    return {t: spec for t, spec in found.items() if spec is not None}


def settings_problems(type_: str, settings: Mapping[str, Any], given: Mapping[str, Any]) -> list[Problem]:
    """Rules across one destination's settings (``Destination.settings_problems``); ``given``
    is the table as written, to tell a ``*_file`` secret that was not read from an absent one."""
    cls = _registry().get(type_)
    if cls is None:
        return []
    named = set(given) | {key.removesuffix("_file") for key in given}
    return cls.settings_problems(settings, named)
