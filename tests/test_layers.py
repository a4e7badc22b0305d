"""The import direction of the code, read from the source (no module is imported to check it).

Layers, highest first; a module may import its own layer's modules and any lower layer, never a higher one:

    top          experiments.cli, experiments.reproduce, experiments.__main__   argv -> parts -> verdicts -> report
    render       experiments.render.*                                            Markdown + PNG, never computes
    runs         experiments.runs.*                                              JSON-ready data, never Markdown
    model, evaluation   experiments.model.*, experiments.evaluation.*            torch; neither imports the other
    methods      experiments.methods.*                                           numpy only
    theory       theory.*                                                        never imports experiments
    shared       experiments.audit.* and the leaves (errors, cache, data, threads, sampling): importable anywhere,
                 and importing only each other

``experiments.compress``, ``.surgery``, ``.calibration`` and ``.loading`` are the public modules the README's
examples use: re-exports of methods/ and model/, placed in the layer of what they re-export.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "experiments")

# (layer, rank): a module may import modules of a lower rank, or of its own layer.
LAYERS = {"top": 6, "render": 5, "runs": 4, "model": 3, "evaluation": 3, "methods": 2, "theory": 1, "shared": 0}
LEAVES = ("experiments.errors", "experiments.cache", "experiments.data", "experiments.threads",
          "experiments.sampling")
PUBLIC = {"experiments.compress": "methods", "experiments.surgery": "model", "experiments.calibration": "model",
          "experiments.loading": "model"}
TOP = ("experiments", "experiments.cli", "experiments.reproduce", "experiments.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def layer_of(name: str) -> str:
    """The layer of a module of theory/ or experiments/ (one clear failure for a module in none)."""
    if name == "theory" or name.startswith("theory."):
        return "theory"
    if name in TOP:
        return "top"
    if name in LEAVES or name == "experiments.audit" or name.startswith("experiments.audit."):
        return "shared"
    if name in PUBLIC:
        return PUBLIC[name]
    package = name.split(".")[1] if name.count(".") >= 1 else ""
    if package in ("render", "runs", "model", "evaluation", "methods"):
        return package
    raise AssertionError(f"{name} belongs to no layer: move it under render/, runs/, model/, evaluation/, "
                         "methods/ or audit/, or make it a leaf")


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports (absolute imports; ``from a import b`` counts a.b when it
    is a module, else a), anywhere in the file, function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                      for alias in node.names}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    names = set(found)
    return {name: imports(path, names) - {name} for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_there_is_no_import_cycle():
    assert cycle(graph()) is None, f"import cycle: {' -> '.join(cycle(graph()) or [])}"


def test_theory_never_imports_experiments():
    wrong = {a: sorted(b for b in bs if b.startswith("experiments")) for a, bs in graph().items()
             if a.startswith("theory")}
    assert not any(wrong.values()), {a: b for a, b in wrong.items() if b}


def test_every_module_is_in_a_layer():
    for name in graph():
        layer_of(name)


def test_every_import_goes_down_the_layers():
    upward = []
    for name, targets in graph().items():
        mine = layer_of(name)
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_checker_finds_a_cycle_and_an_upward_import():
    """The rule can fail: a made-up graph with a cycle and a methods module importing a runner."""
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert LAYERS[layer_of("experiments.runs.rows")] > LAYERS[layer_of("experiments.methods.ranks")]
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("experiments.somewhere")
