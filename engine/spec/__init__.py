"""One declared spec per configuration section, Benthos-style.

:mod:`~engine.spec.fields` declares, :mod:`~engine.spec.parse` reads TOML tables against a
spec, :mod:`~engine.spec.locate` finds the line of a key, :mod:`~engine.spec.render` writes
the reference tables and the JSON Schema.

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

Secrets are never literals: a secret field takes ``${ENV_VAR}`` (never ``${VAR:-default}``:
a default is a secret everyone knows) or a sibling ``<name>_file`` key read at load time.
"""

from engine.spec.fields import (
    KINDS,
    Field,
    Problem,
    Spec,
    SpecError,
    boolean,
    integer,
    join_key,
    number,
    obj,
    objects,
    path,
    range_text,
    string,
    string_list,
    table,
)
from engine.spec.locate import key_lines, locate, locate_problems, split_key_path
from engine.spec.parse import Secret, env_reference, expand, looks_like_key, parse, suggest
from engine.spec.render import render_json_schema, render_markdown

__all__ = [
    "join_key",
    "Field",
    "KINDS",
    "Problem",
    "Secret",
    "Spec",
    "SpecError",
    "env_reference",
    "expand",
    "boolean",
    "integer",
    "key_lines",
    "locate",
    "locate_problems",
    "looks_like_key",
    "number",
    "obj",
    "objects",
    "parse",
    "path",
    "range_text",
    "render_json_schema",
    "render_markdown",
    "split_key_path",
    "string",
    "string_list",
    "suggest",
    "table",
]
