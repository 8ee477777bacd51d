"""The package layout: no circle of imports, hidden or not, and no lower layer importing an
upper one. Read from the source (every import, also inside functions and under
TYPE_CHECKING), so it cannot be fooled by an import that happens to run late."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailguard"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mailguard modules ``path`` imports; ``from pkg import name`` counts the submodule
    ``pkg.name`` when there is one, else the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in modules:
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_the_graph_is_read(graph):
    assert "mailguard.message.context" in graph["mailguard.scanner"]
    assert "mailguard.config" in graph["mailguard.dns"]  # was under TYPE_CHECKING once


def test_no_circle_of_imports(graph):
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("circle of imports: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


# Who may import whom, by folder: a package on the left never imports one on the right.
LOWER_NEVER_IMPORTS = {
    "mailguard.message": ("mailguard.config", "mailguard.scorer", "mailguard.scanner", "mailguard.scorers", "mailguard.stores",
                          "mailguard.learning", "mailguard.reports", "mailguard.milter", "mailguard.auth", "mailguard.classifier"),
    "mailguard.auth": ("mailguard.scorer", "mailguard.scanner", "mailguard.scorers", "mailguard.learning", "mailguard.milter"),
    "mailguard.classifier": ("mailguard.scorer", "mailguard.scanner", "mailguard.scorers", "mailguard.learning", "mailguard.milter"),
    "mailguard.stores": ("mailguard.scorer", "mailguard.scanner", "mailguard.scorers", "mailguard.learning", "mailguard.milter"),
    "mailguard.reports": ("mailguard.scanner", "mailguard.scorers", "mailguard.learning", "mailguard.milter"),
    "mailguard.scorers": ("mailguard.scanner", "mailguard.learning", "mailguard.milter", "mailguard.cli"),
    "mailguard.scorer": ("mailguard.scorers", "mailguard.scanner", "mailguard.learning", "mailguard.milter"),
    "mailguard.scanner": ("mailguard.scorers", "mailguard.learning", "mailguard.milter", "mailguard.cli"),
    "mailguard.learning": ("mailguard.milter", "mailguard.cli"),
    "mailguard.milter": ("mailguard.learning", "mailguard.cli"),
}


@pytest.mark.parametrize("lower", sorted(LOWER_NEVER_IMPORTS))
def test_lower_layers_never_import_upper_ones(graph, lower):
    def within(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items() if within(module, lower)
        for target in targets if any(within(target, upper) for upper in LOWER_NEVER_IMPORTS[lower])
    )
    assert not wrong, wrong
