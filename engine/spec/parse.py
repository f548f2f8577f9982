"""Parsing TOML tables against a :class:`Spec`, with ``${VAR}`` and ``*_file`` secrets."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.errors import CourierError
from engine.spec.fields import Field, Problem, Spec, join_key, range_text

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
    classes = sum(any(test(c) for c in text) for test in (str.islower, str.isupper, str.isdigit))
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


def suggest(name: str, known: list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse_table(spec: Spec, data: Mapping[str, Any], prefix: str, ctx: _Context) -> Any:
    known = [f.name for f in spec.fields] + [f"{f.name}_file" for f in spec.fields if f.secret]
    for key in data:
        if key not in known:
            ctx.problem(join_key(prefix, key), f"unknown key{suggest(key, known)}")
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
    key = join_key(prefix, f.name)
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
    kind = _TOML_TYPE_NAMES.get(type(value), type(value).__name__)
    got = kind if f.secret else f"{kind} {value!r}"
    ctx.problem(key, f"expected {f.type_name}, got {got}")


# What a TOML value read by tomllib is, in the words of the reference tables.
_TOML_TYPE_NAMES = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


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
            ctx.problem(key, f"{value} is out of range {range_text(f)}")
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


def _convert_table(f: Field, value: Any, key: str, parent: Mapping[str, Any], ctx: _Context) -> Any:
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


def env_reference(text: object) -> str | None:
    """The VAR of a value that is exactly ``${VAR}``; None for anything else."""
    match = _ENV_REF.fullmatch(text) if isinstance(text, str) else None
    return match.group(1) if match and match.group(2) is None else None


def expand(text: str, env: Mapping[str, str]) -> str | None:
    """``text`` with every ``${VAR}`` / ``${VAR:-default}`` resolved; None if a VAR is unset."""
    resolved, missing = _substitute(text, env)
    return None if missing else resolved


def _substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(substitute, text), missing


def _interpolate(text: str, f: Field, key: str, ctx: _Context) -> str | None:
    """Resolve ``${VAR}`` / ``${VAR:-default}``; refuse literal secrets and secret defaults.

    A secret with a default is a secret anyone who reads the file knows: if the variable is
    not set, the engine must not start (``courier run --sandbox`` fills the sandbox's own).
    """
    if f.secret and _secret_problem(text, f, key, ctx):
        return None
    if ctx.env is None:
        return text
    resolved, missing = _substitute(text, ctx.env)
    for name in missing:
        ctx.problem(key, f"environment variable {name} is not set")
    return None if missing else resolved


def _secret_problem(text: str, f: Field, key: str, ctx: _Context) -> bool:
    """Report a literal secret or a ``${VAR:-default}`` fallback; whether there was one."""
    if looks_like_key(_ENV_REF.sub("", text)):
        ctx.problem(
            key,
            f'looks like a literal secret; use ${{ENV_VAR}} or {f.name}_file = "/run/secrets/..." instead',
        )
        return True
    defaulted = [m.group(1) for m in _ENV_REF.finditer(text) if m.group(2) is not None]
    for name in defaulted:
        ctx.problem(key, f"a secret cannot have a default: write ${{{name}}} and set {name}")
    return bool(defaulted)
