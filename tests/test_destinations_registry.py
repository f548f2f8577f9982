"""The registry and the declared specs that `courier check` and the README rely on."""

from __future__ import annotations

import pytest
import requests

from engine.destinations import Destination
from engine.destinations.registry import destination_classes
from engine.spec import Spec, parse, render_markdown

REGISTRY = destination_classes()
#: The vendors; ``http`` (tests/test_http_destination.py) has a ``url`` and an open payload.
VENDORS = {kind: cls for kind, cls in REGISTRY.items() if kind != "http"}


def test_the_built_in_types_are_registered_by_type():
    assert sorted(REGISTRY) == ["conneqt", "http", "kpn", "medallies", "qliq"]
    assert all(cls.kind == kind and issubclass(cls, Destination) for kind, cls in REGISTRY.items())


@pytest.mark.parametrize("cls", VENDORS.values(), ids=VENDORS.keys())
def test_every_vendor_declares_its_specs(cls):
    assert isinstance(cls.settings_spec, Spec) and isinstance(cls.payload_spec, Spec)
    names = [f.name for f in cls.settings_spec.fields]
    assert names[0] == "base_url"
    assert {"connect_timeout_s", "read_timeout_s", "ca_file"} <= set(names)
    assert render_markdown(cls.payload_spec).startswith(f"### `{cls.kind} payload`")


@pytest.mark.parametrize(
    ("kind", "secret"),
    [
        ("qliq", "api_key"),
        ("conneqt", "api_key"),
        ("conneqt", "access_token"),
        ("medallies", "password"),
        ("kpn", "client_secret"),
    ],
)
def test_credentials_are_declared_secret(kind, secret):
    assert REGISTRY[kind].settings_spec.field(secret).secret


def test_secrets_come_from_the_environment_not_the_channel_file():
    spec = REGISTRY["qliq"].settings_spec
    settings, problems = parse(
        spec,
        {"base_url": "https://capi.qliqsoft.com", "api_key": "${QLIQ_API_KEY}"},
        env={"QLIQ_API_KEY": "from-env"},
    )
    assert problems == []
    assert settings["api_key"] == "from-env"
    assert "from-env" not in repr(settings["api_key"])
    destination = REGISTRY["qliq"](settings, requests.Session())
    assert (destination.settings["connect_timeout_s"], destination.timeout) == (5.0, (5.0, 30.0))
