"""The package's layering, checked on the import graph (every ``import`` in every module, function-level ones
included; imports under ``if TYPE_CHECKING:`` are types only and do not count).

The rules are the project's: a stage never imports the router; config never imports a stage; routing asks the
state, never a stage; a client dialect and a provider adapter share wire helpers only through a neutral module;
the simulator (the test oracle) shares nothing with the gateway but the event-stream codec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "python" / "gateway"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at run time."""
    tree = ast.parse(path.read_text())
    pkg = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("gateway"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod.startswith("gateway"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)  # ``from gateway import tokens``
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


GRAPH = {module_name(p): runtime_imports(p) for p in PKG.rglob("*.py")}


def offenders(importer: str, imported: str, allow: tuple[str, ...] = ()) -> list[str]:
    """``importer.* → imported.*`` edges (prefix match on dotted names)."""

    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return sorted(
        f"{m} -> {i}"
        for m, imports in GRAPH.items()
        if under(m, importer)
        for i in imports
        if under(i, imported) and not any(under(i, a) for a in allow)
    )


def test_the_graph_is_read():
    assert len(GRAPH) > 50
    assert "gateway.routing.router" in GRAPH["gateway.app"]


@pytest.mark.parametrize(
    ("importer", "imported", "allow"),
    [
        ("gateway.stages", "gateway.routing", ()),  # a stage never holds or imports the router
        ("gateway.config", "gateway.stages", ()),  # config imports no stage
        ("gateway.routing", "gateway.stages", ()),  # routing asks the state, never a stage
        ("gateway.dialects", "gateway.providers", ()),  # shared wire helpers live in neutral modules
        ("gateway.providers", "gateway.dialects", ()),
        ("gateway.state", "gateway.stages", ()),
        ("gateway.state", "gateway.routing", ()),
        ("gateway.pipeline", "gateway.stages", ()),
        ("gateway.context", "gateway.stages", ()),
        ("gateway.context", "gateway.routing", ()),
        ("gateway.telemetry", "gateway.stages", ()),
        ("gateway.simulate", "gateway", ("gateway.simulate", "gateway.providers.eventstream")),
    ],
)
def test_no_backward_import(importer, imported, allow):
    assert offenders(importer, imported, allow) == []


def test_auth_enrich_scopes_and_metrics_are_not_stages():
    names = set(GRAPH)
    assert {"gateway.auth", "gateway.enrich", "gateway.scopes", "gateway.telemetry.metrics"} <= names
    assert not names & {"gateway.stages.auth", "gateway.stages.enrich", "gateway.stages.scopes"}
    assert "gateway.state.metrics" not in names
