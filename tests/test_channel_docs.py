"""The channel reference and the shipped JSON Schema come from the one declared spec."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from engine.channel.config import CHANNEL
from engine.channel.docs import (
    SCHEMA_FILE,
    channel_json_schema,
    channel_reference_markdown,
    channel_schema_text,
    write_channel_schema,
)

REPO = Path(__file__).parent.parent


def test_shipped_schema_is_up_to_date():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == channel_schema_text(), (
        "regenerate with: python -c 'from engine.channel.docs import write_channel_schema; "
        "write_channel_schema()'"
    )


def test_write_channel_schema_writes_valid_json(tmp_path):
    written = write_channel_schema(tmp_path / "s.json")
    assert json.loads(written.read_text()) == channel_json_schema()


def _keys(schema: dict, data: dict, where: str = "") -> list[str]:
    """Keys of ``data`` that ``schema`` does not declare (a small additionalProperties check)."""
    unknown = []
    for key, value in data.items():
        child = schema.get("properties", {}).get(key)
        if child is None:
            unknown.append(where + key)
        elif isinstance(value, dict):
            unknown += _keys(child, value, f"{where}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                unknown += _keys(child["items"], item, f"{where}{key}[].")
    return unknown


def test_examples_name_the_schema_and_use_only_declared_keys():
    schema = channel_json_schema()
    for file in sorted((REPO / "channels").glob("*.toml")):
        text = file.read_text()
        assert text.startswith("#:schema ../engine/channel/channel.schema.json\n"), file
        assert _keys(schema, {k: v for k, v in tomllib.loads(text).items() if k != "destinations"}) == [], (
            file
        )
        destinations = schema["properties"]["destinations"]["items"]
        for item in tomllib.loads(text)["destinations"]:
            assert _keys(destinations, {k: v for k, v in item.items() if k != "settings"}) == []


def test_reference_has_a_table_per_section_and_every_key():
    text = channel_reference_markdown()
    for heading in (
        "`[source]`",
        "`[source.filter]`",
        "`[source.tls]`",
        "`[ack]`",
        "`[[destinations]]`",
        "`[destinations.retry]`",
        "`[status_reports]`",
    ):
        assert f"### {heading}" in text
    for field in CHANNEL.fields:
        assert f"| `{field.name}` |" in text
    assert '| `processing_ids` | list of text | `["P"]` |' in text
