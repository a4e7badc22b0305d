"""Packaging: every third-party module that theory/ and experiments/ import is a declared runtime dependency,
so that a plain ``pip install .`` (no extras) runs every command."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"theory", "experiments"}


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every module imported (at any depth of the code) by the .py files under ``folder``
    (subpackages included)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    """The distribution names of pyproject's [project].dependencies (no extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalized(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0]) for req in project["dependencies"]}


def test_every_third_party_import_is_a_runtime_dependency():
    third_party = set()
    for folder in OWN:
        third_party |= imported_modules(ROOT / folder) - OWN - set(sys.stdlib_module_names) - {"__future__"}
    assert {"numpy", "torch", "hypothesis", "lm_eval"} <= third_party      # the parser sees the imports
    providers = packages_distributions()
    missing = {m: providers.get(m) for m in third_party
               if not {normalized(d) for d in providers.get(m, [m])} & declared_dependencies()}
    assert not missing, f"imported but not in [project].dependencies: {missing}"


def test_hypothesis_is_not_only_a_development_extra():
    assert "hypothesis" in declared_dependencies()
    assert "hypothesis" in imported_modules(ROOT / "theory")
