"""The README reference tables and the JSON Schema, generated from a :class:`Spec`."""

from __future__ import annotations

from typing import Any

from engine.spec.fields import Field, Spec, join_key, range_text

# -- rendering ----------------------------------------------------------------------------


def _default_text(f: Field) -> str:
    if not f.has_default or f.default is None:
        return "required" if f.required else ""
    return f"`{_toml_value(f.default)}`"


def _toml_value(value: Any) -> str:
    """``value`` written as it would be in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _doc_cell(f: Field) -> str:
    notes = [f.doc]
    if f.choices:
        notes.append("One of " + ", ".join(f"`{_toml_value(c)}`" for c in f.choices) + ".")
    if f.min is not None or f.max is not None:
        notes.append(f"Range {range_text(f)}.")
    if f.secret:
        notes.append(f"Secret: `${{ENV_VAR}}` or `{f.name}_file`.")
    if f.has_example:
        notes.append(f"Example: `{_toml_value(f.example)}`.")
    return " ".join(n for n in notes if n).replace("|", "\\|")


def render_markdown(spec: Spec, *, level: int = 3) -> str:
    """Reference tables for ``spec`` and each nested table, headed as in the TOML file."""
    out: list[str] = []
    _render_section(spec, spec.name, "", level, out)
    return "\n".join(out)


def _render_section(spec: Spec, heading: str, prefix: str, level: int, out: list[str]) -> None:
    out += [f"{'#' * level} `{heading}`", "", spec.doc, ""]
    out += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for f in spec.fields:
        out.append(f"| `{f.name}` | {f.type_name} | {_default_text(f)} | {_doc_cell(f)} |")
    out.append("")
    for f in spec.fields:
        if f.spec is not None:
            key = join_key(prefix, f.name)
            child = f"[[{key}]]" if f.kind == "objects" else f"[{key}]"
            _render_section(f.spec, child, key, level, out)


_JSON_TYPES = {
    "str": "string",
    "path": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "object": "object",
    "objects": "array",
    "table": "object",
}


def render_json_schema(spec: Spec, *, schema_id: str | None = None) -> dict[str, Any]:
    """A JSON Schema (draft-07, as editors' TOML plugins read it) for files following ``spec``."""
    schema: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#"}
    if schema_id:
        schema["$id"] = schema_id
    schema.update(_object_schema(spec))
    return schema


def _object_schema(spec: Spec) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    conditions: list[dict[str, Any]] = []
    for f in spec.fields:
        properties[f.name] = _field_schema(f)
        if f.secret:
            properties[f"{f.name}_file"] = {
                "type": "string",
                "description": f"File holding {f.name} (read at load time).",
            }
        if f.kind == "table" and f.variants:
            for value, variant in sorted(f.variants().items()):
                conditions.append(
                    {
                        "if": {"properties": {f.discriminator: {"const": value}}},
                        "then": {"properties": {f.name: _object_schema(variant)}},
                    }
                )
    schema: dict[str, Any] = {
        "type": "object",
        "description": spec.doc,
        "properties": properties,
        "additionalProperties": False,
    }
    required = [f.name for f in spec.fields if f.required and not f.secret]
    if required:
        schema["required"] = required
    if conditions:
        schema["allOf"] = conditions
    return schema


def _field_schema(f: Field) -> dict[str, Any]:
    if f.kind == "list":
        schema: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
        if f.choices:
            schema["items"]["enum"] = list(f.choices)
    elif f.kind == "object":
        schema = _object_schema(f.spec)
    elif f.kind == "objects":
        schema = {"type": "array", "items": _object_schema(f.spec)}
    else:
        schema = {"type": _JSON_TYPES[f.kind]}
        if f.choices:
            schema["enum"] = list(f.choices)
    schema["description"] = f.doc
    if f.min is not None:
        schema["minimum"] = f.min
    if f.max is not None:
        schema["maximum"] = f.max
    if f.has_default and f.default is not None:
        schema["default"] = _json_value(f.default)
    if f.has_example:
        schema["examples"] = [_json_value(f.example)]
    return schema


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
