"""Data flows one way (DESIGN.md §4): a module never imports one above it on the sync path."""

from __future__ import annotations

import ast
from pathlib import Path

import fhirsync

PACKAGE = Path(fhirsync.__file__).parent

# Lower layers first. A module may import its own layer and any layer before it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "categories", "canonical", "records", "settings", "runtime"}),
    frozenset({"store"}),
    frozenset({"feed", "clients", "service"}),
    frozenset({"sync"}),
    frozenset({"node", "server", "ui"}),
    frozenset({"cli", "testing"}),
)


def _layer(top: str) -> int:
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"fhirsync.{top} is in no layer; add it to LAYERS and DESIGN.md §4")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fhirsync."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fhirsync."):
                    found.add(alias.name.split(".")[1])
    return found


def test_no_module_imports_a_higher_layer() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if top in ("__init__", "__main__"):
            continue
        own = _layer(top)
        for imported in _imports(path):
            if imported != top and _layer(imported) > own:
                violations.append(f"{rel} imports fhirsync.{imported}")
    assert violations == []


def test_no_foreign_http_exception_below_the_server() -> None:
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0]
        if top in ("server", "testing"):
            continue
        assert "HTTPException" not in path.read_text(encoding="utf-8"), path
