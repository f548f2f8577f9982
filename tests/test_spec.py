"""The declared spec: parsing, problems, secrets, line locating and rendering."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

import pytest

from engine.spec import (
    Problem,
    Secret,
    Spec,
    boolean,
    env_reference,
    expand,
    integer,
    key_lines,
    locate,
    locate_problems,
    looks_like_key,
    number,
    obj,
    objects,
    parse,
    path,
    render_json_schema,
    render_markdown,
    string,
    string_list,
    table,
)


@dataclass(frozen=True)
class Retry:
    max_attempts: int
    factor: float


RETRY = Spec(
    "retry",
    "Backoff.",
    (
        integer("max_attempts", "Attempts.", default=5, min=1),
        number("factor", "Growth.", default=2.0, min=1.0),
    ),
    build=Retry,
)
QLIQ = Spec(
    "qliq settings",
    "Qliq.",
    (
        string("base_url", "API root.", required=True),
        string("api_key", "Key.", required=True, secret=True),
    ),
)
DEST = Spec(
    "destination",
    "A destination.",
    (
        string("name", "Name.", required=True),
        string("type", "Vendor.", required=True, choices=("qliq", "kpn")),
        path("mapping", "Mapping file."),
        table("settings", "Vendor settings.", discriminator="type", variants=lambda: {"qliq": QLIQ}),
        obj("retry", RETRY),
    ),
)
TOP = Spec(
    "channel",
    "A channel.",
    (
        string("name", "Name.", required=True),
        boolean("enabled", "On.", default=True),
        string_list("events", "Events.", default=("failed",), choices=("delivered", "failed")),
        objects("destinations", DEST),
    ),
)


def test_parse_applies_defaults_builds_dataclasses_and_resolves_paths(tmp_path):
    data = {
        "name": "c",
        "destinations": [
            {
                "name": "d",
                "type": "kpn",
                "mapping": "../m.toml",
                "retry": {"max_attempts": 3},
            }
        ],
    }
    value, problems = parse(TOP, data, env={}, base_dir=tmp_path)
    assert problems == []
    assert value["enabled"] is True and value["events"] == ("failed",)
    dest = value["destinations"][0]
    assert dest["retry"] == Retry(3, 2.0)
    assert dest["mapping"] == tmp_path.parent / "m.toml"
    with pytest.raises(TypeError):
        value["name"] = "x"  # read-only


def test_all_problems_are_collected_with_key_paths_and_suggestions():
    data = {
        "nmae": "c",
        "enabled": "yes",
        "events": ["delivred"],
        "destinations": [
            {"name": "d", "type": "qliq", "retry": {"max_attempts": 0, "factr": 2}},
        ],
    }
    _, problems = parse(TOP, data, env={})
    got = {p.key: p.message for p in problems}
    assert got["nmae"] == "unknown key; did you mean 'name'?"
    assert got["name"] == "missing required key"
    assert got["enabled"] == "expected true or false, got text 'yes'"
    assert "did you mean 'delivered'" in got["events[0]"]
    assert got["destinations[0].retry.max_attempts"] == "0 is out of range [1, inf]"
    assert "did you mean 'factor'" in got["destinations[0].retry.factr"]
    assert got["destinations[0].settings.base_url"] == "missing required key"


def test_table_without_a_matching_variant_is_accepted_as_is():
    data = {"name": "c", "destinations": [{"name": "d", "type": "kpn", "settings": {"x": 1}}]}
    value, problems = parse(TOP, data, env={})
    assert problems == []
    assert dict(value["destinations"][0]["settings"]) == {"x": 1}


def settings(**table):
    return {"name": "c", "destinations": [{"name": "d", "type": "qliq", "settings": table}]}


def test_secret_from_env_with_default_and_repr_hidden():
    value, problems = parse(
        TOP, settings(base_url="${URL:-http://127.0.0.1:8081}", api_key="${KEY}"), env={"KEY": "s3cr3t-value"}
    )
    assert problems == []
    got = value["destinations"][0]["settings"]
    assert got["base_url"] == "http://127.0.0.1:8081"
    assert got["api_key"] == "s3cr3t-value" and isinstance(got["api_key"], Secret)
    assert "s3cr3t" not in repr(got["api_key"])


def test_missing_env_var_is_a_problem_unless_env_is_skipped():
    table_ = settings(base_url="http://x", api_key="${NOPE}")
    _, problems = parse(TOP, table_, env={})
    assert [str(p) for p in problems] == [
        "destinations[0].settings.api_key: environment variable NOPE is not set"
    ]
    _, problems = parse(TOP, table_, env=None)
    assert problems == []


def test_secret_file_is_read_relative_to_base_dir(tmp_path):
    (tmp_path / "key").write_text("from-file\n")
    value, problems = parse(TOP, settings(base_url="http://x", api_key_file="key"), env={}, base_dir=tmp_path)
    assert problems == []
    assert value["destinations"][0]["settings"]["api_key"] == "from-file"
    _, problems = parse(TOP, settings(base_url="http://x", api_key_file="absent"), env={}, base_dir=tmp_path)
    assert problems[0].key == "destinations[0].settings.api_key_file"


def test_literal_secret_is_refused_and_never_echoed():
    literal = "sk_live_9fQ2xLp7Tz4Wm8Rb3Kd"
    _, problems = parse(TOP, settings(base_url="http://x", api_key=literal), env={})
    assert len(problems) == 1 and "literal secret" in problems[0].message
    assert literal not in str(problems[0])
    _, problems = parse(TOP, settings(base_url="http://x", api_key=42), env={})
    assert "42" not in str(problems[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sk_live_9fQ2xLp7Tz4Wm8Rb3Kd", True),
        ("3f2a9c1e-77b0-4c1d-9e5a-2b6f8d0c4e11", True),
        ("sandbox-qliq-key", False),
        ("short1A", False),
        ("aaaaaaaaaaaaaaaaaaaaaaaa1", False),
        ("a perfectly normal sentence 123", False),
    ],
)
def test_looks_like_key(text, expected):
    assert looks_like_key(text) is expected


TOML = '''\
name = "c"   # comment = not a key
notes = """
fake = "not a key"
[not.a.header]
"""
events = [
  "failed",
]

[[destinations]]
name = "a"
  [destinations.retry]
  max_attempts = 3

[[destinations]]
name = "b"
settings = { base_url = "x" }
retry.factor = 2.0
"quoted.key" = 1
'''


def test_key_lines_follow_headers_arrays_dotted_and_quoted_keys():
    tomllib.loads(TOML)  # the fixture is valid TOML
    lines = key_lines(TOML)
    assert lines[("name",)] == 1
    assert lines[("events",)] == 6
    assert ("fake",) not in lines and ("not", "a", "header") not in lines
    assert lines[("destinations", "0")] == 10
    assert lines[("destinations", "0", "retry", "max_attempts")] == 13
    assert lines[("destinations", "1", "name")] == 16
    assert lines[("destinations", "1", "retry", "factor")] == 18
    assert lines[("destinations", "1", "quoted.key")] == 19
    assert locate(lines, "destinations[1].settings.base_url") == 17
    assert locate(lines, "destinations[0].retry.factor") == 12
    assert locate(lines, "absent") is None


def test_locate_problems_prints_file_line_key_message(tmp_path):
    file = tmp_path / "c.toml"
    [problem] = locate_problems([Problem("destinations[0].retry.max_attempts", "bad")], file, TOML)
    assert str(problem) == f"{file}:13: destinations[0].retry.max_attempts: bad"


def test_render_markdown_lists_every_key_under_toml_headers():
    text = render_markdown(TOP)
    assert "### `[[destinations]]`" in text and "### `[destinations.retry]`" in text
    assert "| `max_attempts` | a whole number | `5` | Attempts. Range [1, inf]. |" in text
    assert "Secret: `${ENV_VAR}` or `api_key_file`." not in text  # variant tables not inlined
    assert 'One of `"delivered"`, `"failed"`.' in text


def test_json_schema_is_strict_and_knows_variants():
    schema = render_json_schema(TOP)
    assert schema["additionalProperties"] is False and schema["required"] == ["name"]
    dest = schema["properties"]["destinations"]["items"]
    assert dest["properties"]["type"]["enum"] == ["qliq", "kpn"]
    [rule] = dest["allOf"]
    assert rule["if"] == {"properties": {"type": {"const": "qliq"}}}
    qliq = rule["then"]["properties"]["settings"]
    assert set(qliq["properties"]) == {"base_url", "api_key", "api_key_file"}
    assert qliq["required"] == ["base_url"]


@pytest.mark.parametrize("env", [{}, {"QLIQ_KEY": "set"}, None], ids=["unset", "set", "skip-env"])
@pytest.mark.parametrize("default", ["sandbox-qliq-key", ""])
def test_a_secret_with_a_default_is_refused_whether_or_not_its_variable_is_set(env, default):
    table_ = settings(base_url="http://x", api_key=f"${{QLIQ_KEY:-{default}}}")
    value, problems = parse(TOP, table_, env=env)
    assert [str(p) for p in problems] == [
        "destinations[0].settings.api_key: a secret cannot have a default: write ${QLIQ_KEY} and set QLIQ_KEY"
    ]


def test_non_secret_settings_keep_their_defaults_and_secrets_are_refused_one_by_one():
    table_ = settings(base_url="${URL:-http://127.0.0.1:8081}", api_key="${A:-x}-${B:-y}")
    _, problems = parse(TOP, table_, env={})
    assert [p.message for p in problems] == [
        "a secret cannot have a default: write ${A} and set A",
        "a secret cannot have a default: write ${B} and set B",
    ]


def test_env_reference_and_expand():
    assert env_reference("${QLIQ_API_KEY}") == "QLIQ_API_KEY"
    assert [env_reference(v) for v in ("${A:-x}", "x${A}", "${A}${B}", None, 3)] == [None] * 5
    assert expand("${URL:-http://h}/v1", {}) == "http://h/v1"
    assert expand("${URL}/v1", {"URL": "https://k"}) == "https://k/v1"
    assert expand("${URL}/v1", {}) is None


def test_a_key_hidden_in_an_env_default_is_still_a_literal_secret():
    table_ = settings(base_url="http://x", api_key="${QLIQ_KEY:-qK7vP2xR9tL4mZ8wB3nH6jD1}")
    _, problems = parse(TOP, table_, env={"QLIQ_KEY": "set"})
    assert [p.key for p in problems] == ["destinations[0].settings.api_key"]
    assert "qK7vP2" not in str(problems[0])


def test_skipping_env_does_not_read_secret_files(tmp_path):
    value, problems = parse(
        TOP, settings(base_url="http://x", api_key_file="/nonexistent/key"), env=None, base_dir=tmp_path
    )
    assert problems == [] and value["destinations"][0]["settings"]["api_key"] is None


def test_giving_a_secret_twice_is_a_problem(tmp_path):
    (tmp_path / "key").write_text("k")
    _, problems = parse(
        TOP,
        settings(base_url="http://x", api_key="${K}", api_key_file="key"),
        env={"K": "k"},
        base_dir=tmp_path,
    )
    assert [p.message for p in problems] == ["give either api_key or api_key_file, not both"]
