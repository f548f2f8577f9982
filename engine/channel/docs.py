"""The channel reference, generated from :data:`engine.channel.config.CHANNEL`.

``channel.schema.json`` ships beside this module so editors (VS Code with Even Better TOML,
via a ``#:schema`` comment at the top of a channel file) autocomplete and check keys. It is
regenerated with :func:`write_channel_schema`; a test fails when it is stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.channel.config import CHANNEL
from engine.spec import render_json_schema, render_markdown

SCHEMA_FILE = Path(__file__).with_name("channel.schema.json")
SCHEMA_ID = "https://courier-hl7.invalid/schemas/channel.schema.json"


def channel_json_schema() -> dict[str, Any]:
    """The JSON Schema of a channel file."""
    schema = render_json_schema(CHANNEL, schema_id=SCHEMA_ID)
    schema["title"] = "Courier channel"
    return schema


def channel_schema_text() -> str:
    """The exact text of ``channel.schema.json``."""
    return json.dumps(channel_json_schema(), indent=2, sort_keys=False) + "\n"


def write_channel_schema(file: Path = SCHEMA_FILE) -> Path:
    """(Re)write the shipped schema file; run after changing the channel spec."""
    file.write_text(channel_schema_text(), encoding="utf-8")
    return file


def channel_reference_markdown() -> str:
    """The README's channel reference: one table per TOML section."""
    return render_markdown(CHANNEL, level=3)
