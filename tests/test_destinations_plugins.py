"""Vendors are plugins: the core names none of them, and a package Courier has never heard of
adds a destination type through the ``courier.destinations`` entry points alone."""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.destinations.registry import destination_types, plugins
from tests.support.mllp import BlockingClient
from tests.support.scripted_http import Reply, ScriptedServer
from tests.support.subprocess_engine import STORE_KEY, courier, free_port, listening
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
PLUGIN_PATH = Path(__file__).resolve().parent / "fixtures" / "plugin_pkg"
BUILT_IN = ("qliq", "conneqt", "medallies", "kpn")
#: Types named after their protocol: the core says "http" about what it is, not about a vendor
#: (that the core never imports the generic type's folder is tested below).
GENERIC = frozenset({"http"})

NOT_CORE = (
    *(f"destinations/{folder}/" for folder in (*BUILT_IN, *GENERIC)),  # each type's own folder
    "destinations/registry.py",  # the one place that knows the types
    "docs.py",  # writes the README, whose samples show a real vendor's status message
)
#: A store migration is history: it names the namespace the old code wrote.
FROZEN = {("store/schema.py", "DELETE FROM kv WHERE namespace = 'qliq-conversation';")}


def vendor_words(source: str) -> Iterator[tuple[int, str]]:
    """(line, token) for each code token naming a vendor: names, attributes and strings, but
    not comments or docstrings (a string that is a statement of its own), which explain."""
    pattern = re.compile(
        rf"(?<![a-z0-9])({'|'.join(sorted({*BUILT_IN, *destination_types()} - GENERIC))})(?![a-z0-9])", re.I
    )
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.NL]
    statement_start = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    for i, token in enumerate(tokens):
        if token.type == tokenize.COMMENT:
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.ENDMARKER
        docstring = (
            token.type == tokenize.STRING
            and before in statement_start
            and after
            in (
                tokenize.NEWLINE,
                tokenize.COMMENT,
                tokenize.ENDMARKER,
            )
        )
        if not docstring and pattern.search(token.string):
            yield token.start[0], token.string


def test_the_scan_finds_a_vendor_in_code_and_not_in_words_about_it():
    source = (
        '"""Sends to Qliq."""\n\nKIND = "qliq"  # Qliq\nif kind == KPN_KIND:\n    """KPN."""\n    x = 1\n'
    )
    assert [line for line, _ in vendor_words(source)] == [3, 4]
    assert list(vendor_words('x = "conneqt-like"\n')) != []  # a word inside a longer string
    assert list(vendor_words('x = "kpnx"\n')) == []  # not a word


def test_the_core_names_no_vendor():
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        where = path.relative_to(ENGINE).as_posix()
        if where.startswith(NOT_CORE):
            continue
        for line, text in vendor_words(path.read_text(encoding="utf-8")):
            if not any(where == file and frozen in text for file, frozen in FROZEN):
                found.append(f"engine/{where}:{line}: {text[:60]}")
    assert found == [], "\n".join(found)


def test_the_core_imports_no_type_folder():
    folders = tuple(f"engine.destinations.{folder}" for folder in (*BUILT_IN, *GENERIC))
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        where = path.relative_to(ENGINE).as_posix()
        if where.startswith(NOT_CORE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"engine/{where}:{node.lineno}: {n}" for n in names if n.startswith(folders)]
    assert found == [], "\n".join(found)


def test_the_built_ins_register_through_the_entry_points():
    assert {*BUILT_IN, *GENERIC} <= set(destination_types())
    assert all(plugin.kind == kind for kind, plugin in plugins().items())


def with_plugin(path: Path) -> dict[str, str]:
    """The environment of a Python where ``path`` is installed (importable, with its metadata)."""
    python_path = os.pathsep.join(filter(None, (str(path), os.environ.get("PYTHONPATH"))))
    return dict(os.environ, PYTHONPATH=python_path, COURIER_STORE_KEY=STORE_KEY)


CHANNEL = """
name = "ward-pages"
[source]
listen = "tcp:{port}:interface=127.0.0.1"
[source.filter]
message_types = ["ORU^R01"]
[[destinations]]
name = "night-pager"
type = "pager"
mapping = "page.toml"
  [destinations.settings]
  base_url = "http://127.0.0.1:{gateway}"
"""

MAPPING = """
input = ["ORU^R01"]
output = "pager"
[fields]
to = { const = "4711" }
text = { template = "{OBR-4.2} result ready" }
"""

ORU = (
    b"MSH|^~\\&|LIS|CITYLAB|COURIER|CITYHOSP|20240131142501||ORU^R01|PG0001|P|2.5\r"
    b"PID|1||9434765919^^^NHS^NH||DOE^JANE\r"
    b"OBR|1||ORD1|GLU^Glucose\r"
)


@pytest.fixture
def gateway() -> Iterator[ScriptedServer]:
    """A local pager gateway that keeps what it was sent."""
    server = ScriptedServer()
    server.replies.append(Reply(201, "page-1"))
    yield server
    server.close()


def test_a_third_party_plugin_adds_a_type_that_checks_and_delivers(tmp_path, gateway):
    port = free_port()
    (tmp_path / "page.toml").write_text(MAPPING)
    (tmp_path / "pages.toml").write_text(
        CHANNEL.format(port=port, gateway=gateway.base_url.rsplit(":", 1)[1])
    )
    env = with_plugin(PLUGIN_PATH)

    check = courier("check", "pages.toml", cwd=tmp_path, env=env)
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, out + err
    own = courier("pager", "pages.toml", cwd=tmp_path, env=env)  # its command, too
    out, err = own.communicate(timeout=60)
    assert own.returncode == 0 and out == f"night-pager: {gateway.base_url}\n", err

    engine = courier("run", "pages.toml", "--store", str(tmp_path / "courier.sqlite3"), cwd=tmp_path, env=env)
    try:
        wait_for(lambda: listening(port, engine), timeout=30, what="courier run listening")
        with BlockingClient(port) as client:
            assert b"MSA|AA|PG0001" in client.request(ORU)
        wait_for(lambda: gateway.received, timeout=20, what="a page")
    finally:
        engine.terminate()
        engine.communicate(timeout=20)
    assert [(r.path, r.json()) for r in gateway.received] == [
        ("/page", {"to": "4711", "text": "Glucose result ready"})
    ]


def test_without_the_plugin_the_type_is_unknown(tmp_path):
    (tmp_path / "page.toml").write_text(MAPPING)
    (tmp_path / "pages.toml").write_text(CHANNEL.format(port=free_port(), gateway=9))
    check = courier("check", "pages.toml", cwd=tmp_path, env=with_plugin(tmp_path / "nothing"))
    out, err = check.communicate(timeout=60)
    assert check.returncode != 0 and "pager" in out + err


def test_a_plugin_that_cannot_load_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "site"
    (broken / "courier_broken-0.1.dist-info").mkdir(parents=True)
    (broken / "courier_broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: courier-broken\nVersion: 0.1\n"
    )
    (broken / "courier_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[courier.destinations]\nbroken = courier_broken_missing:PLUGIN\n"
    )
    (tmp_path / "page.toml").write_text(MAPPING)
    (tmp_path / "pages.toml").write_text(CHANNEL.format(port=free_port(), gateway=9))
    check = courier("check", "pages.toml", cwd=tmp_path, env=with_plugin(broken))
    out, err = check.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert check.returncode != 0
    assert len(lines) == 1 and "'broken'" in lines[0] and "courier_broken_missing" in lines[0], err
