"""Read a mapping file and compile it, or say exactly what is wrong with it.

Every problem is collected (not just the first) and reported as ``file:line: key.path: message``
through :class:`engine.spec.SpecError`, a :class:`~engine.errors.ConfigError`: unknown keys
with a "did you mean", unknown transforms and lookups, bad HL7 paths, wrong value types.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path as FilePath
from typing import Any

from engine.errors import PathError
from engine.mapping.grammar import EACH_KEYS, FIELD_KEYS, MAPPING_KEYS, OUTPUTS, SOURCES
from engine.mapping.mapping import Mapping
from engine.mapping.rules import (
    Condition,
    ConstSource,
    ContextSource,
    EachRule,
    FieldRule,
    FirstOf,
    PathSource,
    Rule,
    Source,
    TemplateSource,
)
from engine.mapping.transforms import Step, compile_transform
from engine.message.path import Path
from engine.spec import Problem, SpecError, locate_problems, suggest

_MESSAGE_TYPE = re.compile(r"[A-Z0-9]{3}(\^[A-Z0-9]{3})?")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_TOML_LINE = re.compile(r"at line (\d+)")
_CONTEXT_PREFIX = "context."


def load_mapping(path: str | FilePath) -> Mapping:
    """Load and compile ``path``; raise ConfigError (a SpecError) naming file, key path and line."""
    file = FilePath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem("", f"cannot read mapping file: {exc}", file)]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _TOML_LINE.search(str(exc))
        problem = Problem("", f"not valid TOML: {exc}", file, int(line.group(1)) if line else None)
        raise SpecError([problem]) from None
    compiler = _Compiler()
    mapping = compiler.mapping(data, file)
    if compiler.problems:
        raise SpecError(locate_problems(compiler.problems, file, text))
    return mapping


def _join(prefix: str, name: str) -> str:
    part = name if _BARE_KEY.fullmatch(name) else f'"{name}"'
    return f"{prefix}.{part}" if prefix else part


class _Compiler:
    """Turns the parsed TOML into rules, collecting a :class:`Problem` for each mistake."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.lookups: dict[str, dict[str, str]] = {}

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def unknown_keys(self, table: dict[str, Any], known: dict[str, str], prefix: str) -> None:
        for name in table:
            if name not in known:
                self.problem(_join(prefix, name), f"unknown key{suggest(name, list(known))}")

    def table(self, data: dict[str, Any], name: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(name, {})
        if isinstance(value, dict):
            return value
        self.problem(_join(prefix, name), f"expected a table, got {type(value).__name__}")
        return {}

    def mapping(self, data: dict[str, Any], file: FilePath) -> Mapping:
        self.unknown_keys(data, MAPPING_KEYS, "")
        if data.get("schema", 1) != 1:
            self.problem("schema", "only schema = 1 exists")
        self.lookups = self.read_lookups(self.table(data, "lookups"))
        rules: list[Rule] = []
        fields = self.table(data, "fields")
        for key, spec in fields.items():
            rule = self.field_rule(key, spec, _join("fields", key))
            if rule is not None:
                rules.append(rule)
        for key, spec in self.table(data, "each").items():
            prefix = _join("each", key)
            if key in fields:
                self.problem(prefix, f"{key!r} is already an output key in [fields]")
            rule = self.each_rule(key, spec, prefix)
            if rule is not None:
                rules.append(rule)
        return Mapping(
            file, self.read_input(data.get("input")), self.read_output(data.get("output")), tuple(rules)
        )

    def read_input(self, value: Any) -> tuple[str, ...]:
        types = [value] if isinstance(value, str) else value
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            self.problem("input", 'expected message types such as ["ORU^R01"]')
            return ()
        for index, text in enumerate(types):
            if not _MESSAGE_TYPE.fullmatch(text):
                self.problem(f"input[{index}]", f"{text!r} is not a message type such as ORU^R01 or MDM")
        return tuple(types)

    def read_output(self, value: Any) -> str:
        if value not in OUTPUTS:
            hint = suggest(value, list(OUTPUTS)) if isinstance(value, str) else ""
            self.problem("output", f"expected one of {', '.join(OUTPUTS)}{hint}")
            return ""
        return value

    def read_lookups(self, tables: dict[str, Any]) -> dict[str, dict[str, str]]:
        lookups = {}
        for name, table in tables.items():
            prefix = _join("lookups", name)
            if not isinstance(table, dict):
                self.problem(prefix, "expected a table of code = value")
                continue
            for code, value in table.items():
                if not isinstance(value, str):
                    self.problem(_join(prefix, code), "lookup values are strings")
            lookups[name] = {code: value for code, value in table.items() if isinstance(value, str)}
        return lookups

    def each_rule(self, key: str, spec: Any, prefix: str) -> EachRule | None:
        if not isinstance(spec, dict):
            self.problem(prefix, "expected a table with segment, where, min and fields")
            return None
        self.unknown_keys(spec, EACH_KEYS, prefix)
        segment = spec.get("segment")
        if not isinstance(segment, str) or not re.fullmatch(r"[A-Z][A-Z0-9]{2}", segment):
            self.problem(_join(prefix, "segment"), "expected a segment name such as OBX")
            return None
        minimum = spec.get("min", 0)
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
            self.problem(_join(prefix, "min"), "expected a whole number, 0 or more")
            minimum = 0
        conditions = self.conditions(spec.get("where", {}), _join(prefix, "where"))
        fields_prefix = _join(prefix, "fields")
        rules = [
            self.field_rule(name, rule, _join(fields_prefix, name))
            for name, rule in self.table(spec, "fields", prefix).items()
        ]
        if not rules:
            self.problem(fields_prefix, "an each needs at least one field")
        return EachRule(key, segment, conditions, minimum, tuple(r for r in rules if r is not None))

    def field_rule(self, key: str, spec: Any, prefix: str) -> FieldRule | None:
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict):
            self.problem(prefix, 'expected a path string or a table such as { path = "PID-5.1" }')
            return None
        self.unknown_keys(spec, FIELD_KEYS, prefix)
        given = [name for name in SOURCES if name in spec]
        if len(given) != 1:
            self.problem(prefix, f"give exactly one of {', '.join(SOURCES)}")
            return None
        source = self.source(given[0], spec, prefix)
        default, required = spec.get("default"), spec.get("required", False)
        if default is not None and not isinstance(default, str):
            self.problem(_join(prefix, "default"), "expected a string")
        if not isinstance(required, bool):
            self.problem(_join(prefix, "required"), "expected true or false")
        steps = self.steps(spec.get("transforms", []), spec, _join(prefix, "transforms"))
        if source is None:
            return None
        return FieldRule(key, source, default if isinstance(default, str) else None, required is True, steps)

    def source(self, kind: str, spec: dict[str, Any], prefix: str) -> Source | None:
        value, key = spec[kind], _join(prefix, kind)
        collect_all = spec.get("all", False)
        if not isinstance(collect_all, bool):
            self.problem(_join(prefix, "all"), "expected true or false")
        if kind != "path" and (collect_all or "where" in spec):
            self.problem(prefix, "where and all only go with path")
        if kind == "const":
            if not isinstance(value, str | int | float | bool):
                self.problem(key, "expected a string, number or boolean")
                return None
            return ConstSource(value)
        if kind == "path":
            return self.path_sources(value, spec, prefix)
        if not isinstance(value, str):
            self.problem(key, "expected a string")
            return None
        if kind == "context":
            return ContextSource(value)
        return self.template(value, key)

    def path_sources(self, value: Any, spec: dict[str, Any], prefix: str) -> PathSource | FirstOf | None:
        """``path = "PID-5.1"``, or a list of paths of which the first with a value wins."""
        key = _join(prefix, "path")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self.problem(key, "expected an HL7 path or a list of them")
            return None
        conditions = self.conditions(spec.get("where", {}), _join(prefix, "where"))
        paths = [self.path(text, key if len(texts) == 1 else f"{key}[{i}]") for i, text in enumerate(texts)]
        if None in paths:
            return None
        sources = tuple(self.path_source(path, conditions, spec.get("all") is True) for path in paths)
        return sources[0] if len(sources) == 1 else FirstOf(sources)

    @staticmethod
    def path_source(path: Path, conditions: tuple[Condition, ...], collect_all: bool) -> PathSource:
        """Split ``where``: conditions on the value's own field pick repetitions, others segments."""
        same_field = tuple(c for c in conditions if _picks_repetition(c.path, path))
        others = tuple(c for c in conditions if c not in same_field)
        return PathSource(path, others, same_field, collect_all)

    def path(self, text: str, key: str) -> Path | None:
        try:
            return Path.parse(text)
        except PathError as exc:
            self.problem(key, str(exc))
            return None

    def conditions(self, where: Any, prefix: str) -> tuple[Condition, ...]:
        if not isinstance(where, dict):
            self.problem(prefix, 'expected a table such as { "PID-3.5" = "NH" }')
            return ()
        conditions = []
        for text, accepted in where.items():
            key = _join(prefix, text)
            values = [accepted] if isinstance(accepted, str) else accepted
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                self.problem(key, "expected a string or a list of strings")
                continue
            path = self.path(text, key)
            if path is not None:
                conditions.append(Condition(path, frozenset(values)))
        return tuple(conditions)

    def template(self, text: str, key: str) -> TemplateSource | None:
        parts: list[Any] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[position : match.start()])
            position = match.end()
            placeholder = match.group(1)
            if placeholder is None:
                parts.append(match.group()[0])
            elif placeholder.startswith(_CONTEXT_PREFIX):
                parts.append(ContextSource(placeholder[len(_CONTEXT_PREFIX) :]))
            else:
                path = self.path(placeholder.strip(), key)
                if path is None:
                    return None
                parts.append(PathSource(path))
        parts.append(text[position:])
        if any(brace in _PLACEHOLDER.sub("", text) for brace in "{}"):
            self.problem(key, "unbalanced brace in template; write {{ or }} for a literal one")
        return TemplateSource(text, tuple(p for p in parts if p != ""))

    def steps(self, entries: Any, spec: dict[str, Any], prefix: str) -> tuple[Step, ...]:
        if not isinstance(entries, list):
            self.problem(prefix, 'expected a list such as ["strip", { date = "%Y-%m-%d" }]')
            return ()
        steps = []
        for index, entry in enumerate(entries):
            key = f"{prefix}[{index}]"
            try:
                step = compile_transform(entry, self.lookups)
            except ValueError as exc:
                self.problem(key, str(exc))
                continue
            if steps and steps[-1].name == "number":
                self.problem(key, "number must be the last transform")
            if step.combines_list and spec.get("all") is not True:
                self.problem(key, f"{step.name} needs all = true on the field")
            steps.append(step)
        if steps and "const" in spec and not isinstance(spec["const"], str):
            self.problem(prefix, "transforms apply to text; this const is not a string")
        return tuple(steps)


def _picks_repetition(condition: Path, value: Path) -> bool:
    """A condition on the value's own field (and no fixed repetition) chooses a repetition."""
    return (
        condition.segment == value.segment
        and condition.field == value.field
        and condition.occurrence is None
        and condition.repetition is None
        and value.repetition is None
    )
