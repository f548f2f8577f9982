"""Courier's own client code, driven the way the engine drives it, against the recorder.

Each destination is built from the class the registry gives for its type
(:func:`engine.destinations.registry.destination_class`) with the settings of the
example channel in ``channels/`` (its ``${VAR}`` parts filled in as an operator would), and a
requests session whose proxy is the recording server: Courier addresses the documents' own
host names (over http, so the proxy sees the whole request) and every request lands in the
recorder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import requests

from engine.destinations import Destination, StaticToken
from engine.destinations.registry import destination_class
from engine.mapping import load_mapping
from engine.mapping.render import accepted_messages
from engine.spec.parse import parse

ROOT = Path(__file__).resolve().parents[2]

#: The documented hosts, as an operator would set them in the example channels' variables.
ENV = {
    "QLIQ_BASE_URL": "http://capi.qliqsoft.com",
    "QLIQ_API_KEY": "contract-qliq-key",
    "CONNEQT_BASE_URL": "http://int.conneqt.health",
    "CONNEQT_API_KEY": "contract-conneqt-key",
    "CONNEQT_ACCESS_CODE": "contract-access-code",
    "MEDALLIES_BASE_URL": "http://api.medalliesdirect.com:9443/MessagingAPI",
    "MEDALLIES_USER": "edge",
    "MEDALLIES_PASSWORD": "contract-password",
    "MEDALLIES_WEBHOOK_SECRET": "contract-webhook-secret-0123456789abcdef",
    "KPN_BASE_URL": "http://api-prd.kpn.com",
    "KPN_CLIENT_ID": "contract-client",
    "KPN_CLIENT_SECRET": "contract-secret",
}
EXAMPLE_CHANNELS = {
    "qliq": "ehr_mdm_to_qliq.toml",
    "conneqt": "lis_oru_to_conneqt.toml",
    "medallies": "ris_oru_to_medallies.toml",
    "kpn": "ehr_mdm_to_kpn.toml",
}


def example_channel(kind: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / "channels" / EXAMPLE_CHANNELS[kind]).read_text())


def example_payload(kind: str, sample: str) -> dict[str, Any]:
    """What the example channel's mapping makes of one sample message: a real payload."""
    channel = example_channel(kind)
    mapping = load_mapping(ROOT / "channels" / _destination_table(channel, kind)["mapping"])
    (message, *_) = accepted_messages(mapping, (ROOT / "sample_messages" / sample).read_bytes())
    return mapping.apply(message, context={"channel": channel["name"]})


def _destination_table(channel: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(d for d in channel["destinations"] if d["type"] == kind)


def proxied_session(recorder_url: str) -> requests.Session:
    """A session that sends every request, whatever its host, to the recording server."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": recorder_url, "https": recorder_url}
    return session


def example_settings(kind: str, **overrides: Any) -> Any:
    """The example channel's settings for ``kind``, parsed with the destination's own spec."""
    table = _destination_table(example_channel(kind), kind)["settings"]
    settings, problems = parse(destination_class(kind).settings_spec, {**table, **overrides}, env=ENV)
    assert problems == [], problems
    return settings


def destination(kind: str, recorder_url: str, token: str | None = None, **overrides: Any) -> Destination:
    """The registered destination class of ``kind``, as the engine builds it."""
    cls = destination_class(kind)
    provider = StaticToken(token) if token else None
    return cls(example_settings(kind, **overrides), proxied_session(recorder_url), token_provider=provider)
