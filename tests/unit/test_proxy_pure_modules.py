"""The data plane's pure modules import no I/O, clock or randomness (STYLE.md rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import roost.proxy

BANNED = {"asyncio", "socket", "ssl", "time", "random", "selectors", "os", "uvloop"}
PURE = [
    "admission",
    "backhaul",
    "waitqueue",
    "routes",
    "headers",
    "errors",
    "balance",
    "loadview",
    "flowcontrol",
    "h2limits",
    "usage",
]


@pytest.mark.parametrize("name", PURE)
def test_pure_module_imports(name: str) -> None:
    """No banned module is imported anywhere in the file (top level or inside functions)."""
    path = Path(roost.proxy.__file__).with_name(f"{name}.py")
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    assert not imported & BANNED, f"{name} imports {sorted(imported & BANNED)}"
