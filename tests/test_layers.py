"""The package's layering: data -> (preprocess, diffusion, models) -> (training, evaluation), with the verb kit
(ldae.verbs, ldae.files, ldae.outputs) below all of them. An upward or sideways import fails here, wherever it
stands (module level or inside a function), absolute or relative; imports are read with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ldae"

# package (or top-level module) -> the ldae packages it must not import
FORBIDDEN = {
    "data": {"models", "diffusion", "preprocess", "training", "evaluation"},
    "diffusion": {"models", "preprocess", "training", "evaluation"},
    "models": {"preprocess", "training", "evaluation"},
    "preprocess": {"models", "diffusion", "training", "evaluation"},
    "training": {"evaluation"},
    "evaluation": {"training"},
    "verbs": {"data", "models", "diffusion", "preprocess", "training", "evaluation"},
    "files": {"data", "models", "diffusion", "preprocess", "training", "evaluation", "verbs", "outputs"},
    "outputs": {"data", "models", "diffusion", "preprocess", "training", "evaluation", "verbs"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement anywhere in ``source`` names (relative ones resolved against ``module``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)  # `from ldae import training`
    return found


def layer(module: str) -> str | None:
    """The entry of FORBIDDEN an ldae module belongs to (its first component below ``ldae``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ldae" else None


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        own = layer(module)
        if own not in FORBIDDEN:
            continue
        for target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if layer(target) in FORBIDDEN[own]:
                found.append(f"{path.relative_to(PACKAGE.parent)}: {own} imports {target}")
    return found


def test_no_upward_or_sideways_import():
    assert violations() == []


def test_training_and_evaluation_do_not_import_each_other():
    stage_edges = [
        v for v in violations() if " training imports ldae.evaluation" in v or " evaluation imports ldae.training" in v
    ]
    assert stage_edges == []


@pytest.mark.parametrize(
    "source, module, expected",
    [
        ("def f():\n    from ldae.training.stage import loader\n", "ldae.evaluation.embed", "ldae.training.stage"),
        ("from ..training import stage\n", "ldae.evaluation.embed", "ldae.training.stage"),
        ("from . import runtime\n", "ldae.evaluation.embed", "ldae.evaluation.runtime"),
        ("import ldae.evaluation.runtime as rt\n", "ldae.training.ldae", "ldae.evaluation.runtime"),
        ("from ldae import evaluation\n", "ldae.training.ldae", "ldae.evaluation"),
    ],
)
def test_the_reader_sees_every_kind_of_import(source, module, expected):
    """A function-level, relative or aliased import is read as the module it names (else the test above could
    not fail on it)."""
    assert expected in imported_modules(source, module)
    assert layer(expected) in FORBIDDEN[layer(module)] or layer(expected) == layer(module)
