"""The code's shape: no import cycle inside ``pipeline/``, no module over the size limit.

Cycles are found on the same import walk as the dvc.yaml dependency check
(:func:`tests.unit.test_dvc_code_deps.import_statements`: module-level and function-level imports,
``TYPE_CHECKING`` blocks skipped), as edges between ``pipeline`` modules. An import of a package
(``from pipeline.fetch import fields``) is an edge to the submodule it names when there is one,
else to the package's ``__init__``; a package ``__init__`` that imports its own submodules is the
usual re-export, not a cycle, unless a submodule imports a name back from that ``__init__``.
"""

from __future__ import annotations

import ast

from tests.conftest import REPO
from tests.unit.test_dvc_code_deps import import_statements, statement_names

#: Lines a module of pipeline/ or stages/ may have (DEVELOPERS.md: "small modules, ≤ ~400 lines").
MAX_LINES = 400


def _modules() -> dict[str, str]:
    """Dotted module name → repository path, for every module under pipeline/."""
    modules = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path.relative_to(REPO).as_posix()
    return modules


def import_edges() -> dict[str, set[str]]:
    """Module → the pipeline modules it imports (anywhere in the file)."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        edges[name] = set()
        for statement in import_statements(ast.parse((REPO / path).read_text())):
            imported = statement_names(statement, package)
            # "from pkg import sub" yields both "pkg" and "pkg.sub": the submodule is the edge, not pkg;
            # decided per statement, so "from pkg import name" elsewhere in the file keeps its edge to pkg
            edges[name] |= {m for m in imported if m in modules and m != name
                            and not any(other.startswith(m + ".") and other in modules for other in imported)}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_function_level_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_pipeline() -> None:
    found = cycles(import_edges())
    assert not found, f"import cycles in pipeline/ (move the shared piece to the module that owns it): {found}"


def test_no_module_over_the_size_limit() -> None:
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines())
             for root in ("pipeline", "stages") for p in (REPO / root).rglob("*.py")}
    large = {path: n for path, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not large, f"modules over {MAX_LINES} lines (split them by job): {large}"
