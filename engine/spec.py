"""One declared spec per configuration section, Benthos-style.

A :class:`Spec` is a tuple of :class:`Field` declarations. The same declaration drives
parsing TOML tables into typed values (:func:`parse`), the problems ``courier check``
prints, the README reference tables (:func:`render_markdown`) and the JSON Schema that
editors use for autocompletion (:func:`render_json_schema`). No key is read that is not
declared here, so the documentation cannot drift from the code.

Declare fields with the small constructors, e.g.::

    SETTINGS = Spec("qliq settings", "How to reach Qliq.", (
        string("base_url", "API root.", required=True, example="https://api.qliqsoft.com"),
        string("api_key", "API key.", required=True, secret=True),
        number("timeout_s", "Read timeout.", default=30.0, min=0.1),
    ))
    settings, problems = parse(SETTINGS, table, env=os.environ)

Secrets are never literals: a secret field takes ``${ENV_VAR}`` (``${VAR:-default}`` for
demo defaults) or a sibling ``<name>_file`` key whose file is read at load time.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.errors import ConfigError, CourierError

# -- declarations -------------------------------------------------------------------------

KINDS = ("str", "int", "float", "bool", "path", "list", "object", "objects", "table")
_MISSING: Any = object()

Check = Callable[[Any], "str | None"]
"""Extra validation of a parsed value: returns a problem text, or None when fine."""


@dataclass(frozen=True)
class Field:
    """One key: its type, constraints and documentation."""

    name: str
    kind: str
    doc: str = ""
    required: bool = False
    default: Any = _MISSING
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    example: Any = _MISSING
    secret: bool = False
    item: str | None = None
    spec: Spec | None = None
    discriminator: str | None = None
    variants: Callable[[], Mapping[str, Spec]] | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    @property
    def type_name(self) -> str:
        """The type as an interface analyst reads it in the reference tables."""
        if self.kind == "list":
            return f"list of {self.item}"
        if self.kind == "objects":
            return "list of tables"
        if self.kind in ("object", "table"):
            return "table"
        return {"str": "string", "path": "path", "float": "number"}.get(self.kind, self.kind)


@dataclass(frozen=True)
class Spec:
    """A table of fields; ``build`` (a frozen dataclass) receives the parsed values.

    An ``obj`` field declared with ``default=None`` is an optional section: absent → None.
    List fields run ``check`` on each item.
    """

    name: str
    doc: str
    fields: tuple[Field, ...]
    build: Callable[..., Any] | None = None

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _field(kind: str, name: str, doc: str, **kw: Any) -> Field:
    if isinstance(kw.get("choices"), list):
        kw["choices"] = tuple(kw["choices"])
    return Field(name=name, kind=kind, doc=doc, **kw)


def string(name: str, doc: str, **kw: Any) -> Field:
    return _field("str", name, doc, **kw)


def integer(name: str, doc: str, **kw: Any) -> Field:
    return _field("int", name, doc, **kw)


def number(name: str, doc: str, **kw: Any) -> Field:
    return _field("float", name, doc, **kw)


def boolean(name: str, doc: str, **kw: Any) -> Field:
    return _field("bool", name, doc, **kw)


def path(name: str, doc: str, **kw: Any) -> Field:
    """A file path, resolved against the directory of the file that declares it."""
    return _field("path", name, doc, **kw)


def string_list(name: str, doc: str, **kw: Any) -> Field:
    return _field("list", name, doc, item="str", **kw)


def obj(name: str, spec: Spec, doc: str = "", **kw: Any) -> Field:
    return _field("object", name, doc or spec.doc, spec=spec, **kw)


def objects(name: str, spec: Spec, doc: str = "", **kw: Any) -> Field:
    return _field("objects", name, doc or spec.doc, spec=spec, **kw)


def table(
    name: str,
    doc: str,
    *,
    discriminator: str,
    variants: Callable[[], Mapping[str, Spec]],
    **kw: Any,
) -> Field:
    """A table validated by the spec that a sibling key (e.g. a destination's ``type``) picks.

    When no variant matches (or ``variants`` returns nothing) the table is accepted as is.
    """
    return _field("table", name, doc, discriminator=discriminator, variants=variants, **kw)


# -- problems -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file, printed as ``file:line: key.path: message``."""

    key: str
    message: str
    file: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = [str(self.file)] if self.file else []
        if self.file and self.line:
            where.append(str(self.line))
        prefix = ":".join(where)
        body = f"{self.key}: {self.message}" if self.key else self.message
        return f"{prefix}: {body}" if prefix else body


class SpecError(ConfigError):
    """A file broke its spec; ``problems`` lists everything wrong, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# -- secrets ------------------------------------------------------------------------------


class Secret(str):
    """A secret string: usable as a str, but its repr never shows the value."""

    def __repr__(self) -> str:
        return "Secret('***')"


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def looks_like_key(text: str) -> bool:
    """Whether a literal looks like a credential: long, no spaces, mixed and random-looking."""
    if len(text) < 16 or any(c.isspace() for c in text):
        return False
    classes = sum(
        any(test(c) for c in text) for test in (str.islower, str.isupper, str.isdigit)
    )
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return classes >= 2 and entropy >= 3.5


# -- parsing ------------------------------------------------------------------------------


@dataclass
class _Context:
    env: Mapping[str, str] | None
    base_dir: Path | None
    problems: list[Problem] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))


def parse(
    spec: Spec,
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None,
    base_dir: Path | None = None,
    prefix: str = "",
) -> tuple[Any, list[Problem]]:
    """Parse one table against ``spec``; return the value and every problem found.

    ``env`` resolves ``${VAR}`` references and allows reading ``*_file`` secrets; pass
    None to skip both (``courier check --skip-env``). Relative paths resolve against
    ``base_dir``. Problems carry key paths under ``prefix`` but no file or line: see
    :func:`locate_problems`.
    """
    ctx = _Context(env, base_dir)
    value = _parse_table(spec, data, prefix, ctx)
    return value, ctx.problems


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def suggest(name: str, known: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse_table(spec: Spec, data: Mapping[str, Any], prefix: str, ctx: _Context) -> Any:
    known = [f.name for f in spec.fields] + [f"{f.name}_file" for f in spec.fields if f.secret]
    for key in data:
        if key not in known:
            ctx.problem(_join(prefix, key), f"unknown key{suggest(key, known)}")
    values: dict[str, Any] = {}
    for f in spec.fields:
        values[f.name] = _parse_field(f, data, prefix, ctx)
    if spec.build is None:
        return MappingProxyType(values)
    try:
        return spec.build(**values)
    except (TypeError, ValueError, CourierError):
        if not ctx.problems:
            raise
        return None  # the build choked on a value already reported as a problem


def _parse_field(f: Field, data: Mapping[str, Any], prefix: str, ctx: _Context) -> Any:
    key = _join(prefix, f.name)
    if f.secret and f"{f.name}_file" in data:
        if f.name in data:
            ctx.problem(key, f"give either {f.name} or {f.name}_file, not both")
        return _read_secret_file(data[f"{f.name}_file"], key + "_file", ctx)
    if f.name not in data:
        if f.required:
            ctx.problem(key, "missing required key")
        if f.kind == "object" and not f.has_default:
            return _parse_table(f.spec, {}, key, ctx)
        if f.kind == "table":
            return _convert_table(f, {}, key, data, ctx)
        if f.kind == "objects" and not f.has_default:
            return ()
        return f.default if f.has_default else None
    value = _convert(f, data[f.name], key, data, ctx)
    return value if f.kind == "list" else _checked(f, value, key, ctx)


def _checked(f: Field, value: Any, key: str, ctx: _Context) -> Any:
    message = f.check(value) if value is not None and f.check is not None else None
    if message:
        ctx.problem(key, message)
        return None
    return value


def _read_secret_file(name: Any, key: str, ctx: _Context) -> Secret | None:
    if not isinstance(name, str):
        ctx.problem(key, "expected a file path (string)")
        return None
    if ctx.env is None:
        return None
    file = _resolve_path(name, ctx)
    try:
        return Secret(file.read_text(encoding="utf-8").strip())
    except OSError as exc:
        ctx.problem(key, f"cannot read secret file: {exc.strerror}")
        return None


def _resolve_path(name: str, ctx: _Context) -> Path:
    file = Path(name).expanduser()
    if file.is_absolute() or ctx.base_dir is None:
        return file
    return Path(os.path.normpath(ctx.base_dir / file))


def _type_error(f: Field, value: Any, key: str, ctx: _Context) -> None:
    got = type(value).__name__ if f.secret else f"{type(value).__name__} {value!r}"
    ctx.problem(key, f"expected {f.type_name}, got {got}")


def _convert(f: Field, value: Any, key: str, parent: Mapping[str, Any], ctx: _Context) -> Any:
    if f.kind in ("str", "path"):
        if not isinstance(value, str):
            return _type_error(f, value, key, ctx)
        text = _interpolate(value, f, key, ctx)
        if text is None:
            return None
        if f.kind == "path":
            return _resolve_path(text, ctx)
        return _in_choices(f, Secret(text) if f.secret else text, key, ctx)
    if f.kind in ("int", "float"):
        ok = isinstance(value, int) or (f.kind == "float" and isinstance(value, float))
        if not ok or isinstance(value, bool):
            return _type_error(f, value, key, ctx)
        if (f.min is not None and value < f.min) or (f.max is not None and value > f.max):
            ctx.problem(key, f"{value} is out of range {_range(f)}")
            return None
        return float(value) if f.kind == "float" else value
    if f.kind == "bool":
        return value if isinstance(value, bool) else _type_error(f, value, key, ctx)
    if f.kind == "list":
        return _convert_list(f, value, key, ctx)
    if f.kind == "object":
        if not isinstance(value, Mapping):
            return _type_error(f, value, key, ctx)
        return _parse_table(f.spec, value, key, ctx)
    if f.kind == "objects":
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            return _type_error(f, value, key, ctx)
        return tuple(_parse_table(f.spec, v, f"{key}[{i}]", ctx) for i, v in enumerate(value))
    return _convert_table(f, value, key, parent, ctx)


def _convert_list(f: Field, value: Any, key: str, ctx: _Context) -> tuple[Any, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return _type_error(f, value, key, ctx)
    items = [_interpolate(v, f, f"{key}[{i}]", ctx) for i, v in enumerate(value)]
    items = [_in_choices(f, v, f"{key}[{i}]", ctx) for i, v in enumerate(items)]
    items = [_checked(f, v, f"{key}[{i}]", ctx) for i, v in enumerate(items)]
    return None if None in items else tuple(items)


def _convert_table(
    f: Field, value: Any, key: str, parent: Mapping[str, Any], ctx: _Context
) -> Any:
    if not isinstance(value, Mapping):
        return _type_error(f, value, key, ctx)
    variant = f.variants().get(parent.get(f.discriminator)) if f.variants else None
    if variant is None:
        return MappingProxyType(dict(value))
    return _parse_table(variant, value, key, ctx)


def _in_choices(f: Field, value: Any, key: str, ctx: _Context) -> Any:
    if value is not None and f.choices is not None and value not in f.choices:
        shown = ", ".join(repr(c) for c in f.choices)
        ctx.problem(key, f"{value!r} is not one of {shown}{suggest(str(value), list(f.choices))}")
        return None
    return value


def _range(f: Field) -> str:
    low = "-inf" if f.min is None else f"{f.min:g}"
    high = "inf" if f.max is None else f"{f.max:g}"
    return f"[{low}, {high}]"


def _interpolate(text: str, f: Field, key: str, ctx: _Context) -> str | None:
    """Resolve ``${VAR}`` / ``${VAR:-default}``; refuse literal secrets."""
    literal = _ENV_REF.sub("", text)
    if f.secret:
        defaults = [m.group(2) or "" for m in _ENV_REF.finditer(text)]
        if any(looks_like_key(part) for part in [literal, *defaults]):
            ctx.problem(
                key,
                "looks like a literal secret; use ${ENV_VAR} or "
                f"{f.name}_file = \"/run/secrets/...\" instead",
            )
            return None
    if ctx.env is None:
        return text
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in ctx.env:
            return ctx.env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    resolved = _ENV_REF.sub(substitute, text)
    for name in missing:
        ctx.problem(key, f"environment variable {name} is not set")
    return None if missing else resolved


# -- locating problems in TOML text -------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_INDEX = re.compile(r"\[(\d+)\]")


def _split_dotted(keys: str) -> list[str]:
    parts = re.findall(_BARE_OR_QUOTED, keys)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _skip_multiline(lines: list[str], start: int) -> int:
    """Index of the last line of the value that starts on ``lines[start]``."""
    depth, quote, i = 0, None, start
    while i < len(lines):
        line = lines[i] if i > start else lines[i].split("=", 1)[1]
        j = 0
        while j < len(line):
            ch = line[j]
            if quote:
                if line.startswith(quote, j):
                    j, quote = j + len(quote), None
                    continue
                if ch == "\\" and quote in ('"', '"""'):
                    j += 1
            elif line.startswith(('"""', "'''"), j):
                quote = line[j : j + 3]
                j += 3
                continue
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            j += 1
        if quote in ('"', "'"):
            quote = None
        if depth <= 0 and quote is None:
            return i
        i += 1
    return len(lines) - 1


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every table header and key in TOML ``text`` to its 1-based line number.

    Paths are tuples like ``("destinations", "0", "retry", "max_attempts")``: arrays of
    tables count their ``[[...]]`` headers. tomllib gives no positions, so this scan is
    how problems get a line; it understands headers, dotted and quoted keys, and skips
    multi-line strings and arrays.
    """
    lines = text.splitlines()
    found: dict[tuple[str, ...], int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    i = 0
    while i < len(lines):
        header, key = _HEADER.match(lines[i]), _KEY.match(lines[i])
        if key:
            found.setdefault(table + tuple(_split_dotted(key.group(1))), i + 1)
            i = _skip_multiline(lines, i)
        elif header:
            table = _resolve_header(_split_dotted(header.group(2)), header.group(1), arrays)
            found.setdefault(table, i + 1)
        i += 1
    return found


def _resolve_header(
    names: list[str], bracket: str, arrays: dict[tuple[str, ...], int]
) -> tuple[str, ...]:
    resolved: tuple[str, ...] = ()
    for n, name in enumerate(names):
        resolved += (name,)
        is_last = n == len(names) - 1
        if is_last and bracket == "[[":
            arrays[resolved] = arrays.get(resolved, -1) + 1
            resolved += (str(arrays[resolved]),)
        elif resolved in arrays:
            resolved += (str(arrays[resolved]),)
    return resolved


def split_key_path(key: str) -> tuple[str, ...]:
    """``destinations[0].retry`` → ``("destinations", "0", "retry")``."""
    return tuple(_split_dotted(_INDEX.sub(r".\1", key)))


def locate(lines: Mapping[tuple[str, ...], int], key: str) -> int | None:
    """The line of ``key``, or of its nearest declared ancestor (a missing key's table)."""
    parts = split_key_path(key)
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return None


def locate_problems(problems: list[Problem], file: Path, text: str) -> list[Problem]:
    """Attach ``file`` and the line of each problem's key path, found in ``text``."""
    lines = key_lines(text)
    return [Problem(p.key, p.message, file, p.line or locate(lines, p.key)) for p in problems]


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
        notes.append(f"Range {_range(f)}.")
    if f.secret:
        notes.append(f"Secret: `${{ENV_VAR}}` or `{f.name}_file`.")
    if f.example is not _MISSING:
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
            key = _join(prefix, f.name)
            child = f"[[{key}]]" if f.kind == "objects" else f"[{key}]"
            _render_section(f.spec, child, key, level, out)


_JSON_TYPES = {
    "str": "string", "path": "string", "int": "integer", "float": "number",
    "bool": "boolean", "object": "object", "objects": "array", "table": "object",
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
                "type": "string", "description": f"File holding {f.name} (read at load time).",
            }
        if f.kind == "table" and f.variants:
            for value, variant in sorted(f.variants().items()):
                conditions.append({
                    "if": {"properties": {f.discriminator: {"const": value}}},
                    "then": {"properties": {f.name: _object_schema(variant)}},
                })
    schema: dict[str, Any] = {
        "type": "object", "description": spec.doc, "properties": properties,
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
    if f.example is not _MISSING:
        schema["examples"] = [_json_value(f.example)]
    return schema


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
