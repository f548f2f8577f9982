"""Channel files → frozen dataclasses: defaults, cross-key rules, problems."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.channel.config import DEFAULT_VERSIONS, Channel, parse_channel

MINIMAL = """\
name = "minimal"
[source]
listen = "tcp:2575:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "gp"
type = "kpn"
mapping = "../mappings/m.toml"
  [destinations.settings]
  base_url = "http://127.0.0.1:8084"
  client_id = "${KPN_ID:-sandbox-kpn-client}"
"""


def load(text: str, env=None) -> tuple[Channel | None, list]:
    return parse_channel(Path("/etc/courier/channels/c.toml"), text, env={} if env is None else env)


def test_minimal_channel_gets_documented_defaults():
    channel, problems = load(MINIMAL)
    assert problems == []
    source = channel.source
    assert (source.max_message_bytes, source.idle_timeout_s, source.frame_timeout_s) == (
        16 * 1024 * 1024,
        300.0,
        30.0,
    )
    assert (source.max_connections, source.max_pending_frames) == (64, 16)
    assert (source.charset, source.force_charset, source.mllp_release2) == ("ascii", False, False)
    assert source.tls is None and source.validation.level == "off"
    assert source.filter.processing_ids == ("P",) and source.filter.versions == DEFAULT_VERSIONS
    assert source.filter.on_condition_miss == "filter"
    assert (channel.ack.mode, channel.ack.duplicates) == ("auto", "ack")
    [destination] = channel.destinations
    assert destination.mapping == Path("/etc/courier/mappings/m.toml")
    assert destination.settings["client_id"] == "sandbox-kpn-client"
    assert destination.retry.max_attempts == 20 and destination.concurrency == 1
    assert destination.rate_limit.per_second is None
    assert channel.status_reports is None and channel.enabled is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        channel.name = "other"


def test_optional_sections_parse_when_present():
    text = (
        MINIMAL.replace(
            "[source.filter]",
            """\
[source.tls]
cert_file = "tls/server.pem"
key_file = "tls/server.key"
ca_file = "tls/clients.pem"
require_client_cert = true
[source.filter]""",
        )
        + """
[status_reports]
to = "tcp:host=127.0.0.1:port=2590"
events = ["read"]
"""
    )
    channel, problems = load(text)
    assert problems == []
    assert channel.source.tls.ca_file == Path("/etc/courier/channels/tls/clients.pem")
    assert channel.source.tls.require_client_cert is True
    assert channel.status_reports.events == ("read",)
    assert channel.status_reports.connect_timeout_s == 10.0


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            ("[source.filter]", '[status_reports]\nto = "tcp:host=127.0.0.1"\n[source.filter]'),
            "status_reports.to",
            "not a valid client endpoint string",
        ),
        (
            ('listen = "tcp:2575:interface=127.0.0.1"', 'listen = "ssl:2575:privateKey=absent.pem"'),
            "source.listen",
            "not a valid server endpoint string",
        ),
        (
            (
                'listen = "tcp:2575:interface=127.0.0.1"',
                'listen = "ssl:2575:privateKey=k.pem"\n[source.tls]\ncert_file = "c"\nkey_file = "k"',
            ),
            "source.tls",
            "give TLS either in an ssl: listen string or in [source.tls], not both",
        ),
        (('type = "kpn"', 'type = "kpm"'), "destinations[0].type", "did you mean 'kpn'?"),
        (('name = "gp"', 'name = "GP Practice"'), "destinations[0].name", "lower-case letters"),
        (
            ("[source.filter]", '[source.validation]\nlevel = "paranoid"\n[source.filter]'),
            "source.validation.level",
            "'paranoid' is not one of 'off', 'tolerant', 'strict'",
        ),
        (
            ("[source.filter]", 'charset = "klingon"\n[source.filter]'),
            "source.charset",
            "unknown character set 'klingon'",
        ),
        (
            ('message_types = ["ORU^R01"]', 'message_types = ["ORU_R01"]'),
            "source.filter.message_types[0]",
            "is not a message type such as 'ORU^R01'",
        ),
    ],
)
def test_bad_values_name_their_key(change, key, message):
    channel, problems = load(MINIMAL.replace(*change))
    assert channel is None
    assert any(p.key == key and message in p.message for p in problems), problems


def test_cross_key_rules():
    second = MINIMAL[MINIMAL.index("[[destinations]]") :]
    text = MINIMAL + second + "  [destinations.retry]\n  initial_delay_s = 7200\n"
    _, problems = load(text)
    assert [(p.key, p.message) for p in problems] == [
        ("destinations[1].name", "another destination is already named 'gp'"),
        ("destinations[1].retry.initial_delay_s", "is longer than max_delay_s"),
    ]
    _, problems = load("destinations = []\n" + MINIMAL.split("[[destinations]]")[0])
    assert [p.message for p in problems] == ["a channel needs at least one destination"]


def test_toml_syntax_error_has_its_line():
    channel, [problem] = load('name = "x"\n\n[source\n')
    assert channel is None and problem.line == 3 and problem.key == ""
