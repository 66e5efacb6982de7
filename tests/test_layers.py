"""The import contract: flows -> tasks -> pipeline -> models | infra, and no Prefect below tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "talkfactory"

# For each layer, module prefixes it must never import.
FORBIDDEN = {
    "models": (
        "prefect",
        "talkfactory.infra",
        "talkfactory.pipeline",
        "talkfactory.tasks",
        "talkfactory.flows",
    ),
    "infra": (
        "prefect",
        "talkfactory.models",
        "talkfactory.pipeline",
        "talkfactory.tasks",
        "talkfactory.flows",
    ),
    "pipeline": ("prefect", "talkfactory.tasks", "talkfactory.flows", "talkfactory.cli"),
    "tasks": ("talkfactory.flows", "talkfactory.cli"),
    "flows": ("talkfactory.cli", "talkfactory.factory"),
    "factory": ("talkfactory.cli", "talkfactory.flows", "talkfactory.tasks", "talkfactory.pipeline"),
    # The page reads lineage and stores (infra, pipeline); it never runs a flow or a task.
    "web": ("prefect", "talkfactory.cli", "talkfactory.factory", "talkfactory.flows", "talkfactory.tasks"),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    files = sorted((PKG / layer).rglob("*.py"))
    assert files, f"no modules found in {layer}/"
    bad = [
        f"{f.relative_to(PKG.parent)} imports {name}"
        for f in files
        for name in _imports(f)
        if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[layer])
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import prefect\nfrom talkfactory.infra.settings import Settings\n")
    assert _imports(bad) == ["prefect", "talkfactory.infra.settings"]
