"""The sandboxes read the vendor documents on their own: no sandbox module imports the client.

A sandbox that shared the engine's rules would accept the engine's misreadings (issue 10), so
``courier_sandbox`` imports nothing from ``engine`` at all: checked statically on every import
statement, and at run time by importing each module alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "courier_sandbox"
MODULES = sorted(
    "courier_sandbox" if path.stem == "__init__" else f"courier_sandbox.{path.stem}"
    for path in PACKAGE.glob("*.py")
)
CLIENT = ("engine.destinations", "engine.mapping")


def imported_names(tree: ast.AST) -> list[str]:
    """Every module an import statement names, including imports inside functions."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_every_sandbox_module_is_checked() -> None:
    assert {"courier_sandbox.conneqt", "courier_sandbox.qliq", "courier_sandbox.checks"} <= set(MODULES)


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda path: path.name)
def test_no_import_statement_names_the_engine(path: Path) -> None:
    names = imported_names(ast.parse(path.read_text(encoding="utf-8")))
    assert [name for name in names if name == "engine" or name.startswith("engine.")] == []


def test_the_static_check_sees_imports_inside_functions() -> None:
    tree = ast.parse("def f():\n    from engine.destinations import rules\n    import engine.mapping\n")
    assert imported_names(tree) == ["engine.destinations", "engine.mapping"]


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_sandbox_module_loads_no_client_code(module: str) -> None:
    probe = f"import sys, {module}\nprint(sorted(m for m in sys.modules if m.startswith({CLIENT!r})))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_run_time_check_would_see_a_client_import() -> None:
    probe = (
        f"import sys, engine.destinations\nprint(sorted(m for m in sys.modules if m.startswith({CLIENT!r})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "engine.destinations" in result.stdout
