"""Every dvc.yaml stage declares the code it runs, derived from imports, and nothing stale.

DVC re-runs a stage only when a declared dependency changes, so a module the stage runs but does
not declare (``InputSpec.scale_pixels`` in ``pipeline/registry/__init__.py`` decides every numeric
stage's preprocessing) lets ``dvc repro`` keep outputs that no longer match the code. The code a
stage runs is derived here, not listed by hand:

* A stage's ``cmd`` is ``posezoo <sub> ...``; ``pipeline/cli.py`` dispatches ``<sub>`` to
  ``stages/<sub>.py`` (``importlib.import_module(f"stages.{name}")``). The stage needs that file
  and, transitively, every ``pipeline.*`` module it imports, at module level or inside functions
  (an ``ast`` walk of the whole file; ``if TYPE_CHECKING:`` blocks are skipped: they never run).
  ``pipeline/cli.py`` itself is not required: it only parses arguments and dispatches (it imports
  every stage module to build its parser, which would make every stage depend on all the code).
* Importing ``pipeline.a.b`` runs ``pipeline/__init__.py`` and ``pipeline/a/__init__.py``, so
  package ``__init__.py`` files are required too, except those holding no code: a docstring and at
  most a ``__version__`` literal (``pipeline/__init__.py``: the version reaches no output).
* Data files under ``pipeline/`` are required by the module that defines the constant naming them
  (:data:`DATA_CONSTANTS`); found by the constant's name, so the table survives module moves. A
  registry folder is covered by the folder or by per-model files in it
  (``pipeline/registry/models/${key}.yaml``).

A declared directory covers every file under it. A declared ``pipeline/`` or ``stages/`` path
under which the stage requires nothing is stale (it makes ``dvc repro`` re-run the stage for code
it never runs) and fails too, as does a path declared twice (a file under a declared folder). A directory of which the stage needs only part is accepted (the
check is for missing and stale paths, not for the narrowest declaration).

After moving modules, run ``pytest tests/unit/test_dvc_code_deps.py``: it prints every missing
and stale path of every stage at once.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Iterator

import yaml

from tests.conftest import REPO

#: Module-level constant → the data path (relative to the repository) the module defining it reads.
DATA_CONSTANTS = {
    "MODELS_DIR": "pipeline/registry/models",
    "FAMILIES_DIR": "pipeline/registry/families",
    "DETECTORS_DIR": "pipeline/registry/detectors",
    "TARGETS_FILE": "pipeline/footprint/targets.yaml",
    "SCHEMAS_DIR": "pipeline/accuracy/schemas",
}
CODE_ROOTS = ("pipeline", "stages")


def _module_path(name: str) -> str | None:
    """``pipeline.a.b`` → ``pipeline/a/b.py`` or ``pipeline/a/b/__init__.py``; None if neither exists."""
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (REPO / candidate).is_file():
            return candidate
    return None


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement anywhere in ``tree`` (functions included), except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def statement_names(node: ast.Import | ast.ImportFrom, package: str) -> set[str]:
    """Dotted names of the modules one import statement may load (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{parent}.{base}" if base else parent
    return {base} | {f"{base}.{alias.name}" for alias in node.names}


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Dotted names of the modules an import statement anywhere in ``tree`` may load."""
    return set().union(*(statement_names(node, package) for node in import_statements(tree)))


def _code_free_init(path: str) -> bool:
    """A package ``__init__.py`` holding only a docstring and at most a ``__version__`` literal."""
    if not path.endswith("__init__.py"):
        return False
    for stmt in ast.parse((REPO / path).read_text()).body:
        docstring = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        version = (isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["__version__"]
                   and isinstance(stmt.value, ast.Constant))
        if not (docstring or version):
            return False
    return True


@cache
def _data_readers() -> dict[str, str]:
    """Module file → data path it reads, for every constant of :data:`DATA_CONSTANTS`."""
    readers: dict[str, str] = {}
    found: set[str] = set()
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for stmt in ast.parse(path.read_text()).body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in DATA_CONSTANTS:
                    readers[path.relative_to(REPO).as_posix()] = DATA_CONSTANTS[target.id]
                    found.add(target.id)
    assert found == set(DATA_CONSTANTS), f"no module defines {sorted(set(DATA_CONSTANTS) - found)}: update DATA_CONSTANTS"
    return readers


@cache
def required_paths(stage_module: str) -> frozenset[str]:
    """Code files (and data paths) that ``stage_module`` (e.g. ``stages.optimize``) runs or reads."""
    required: set[str] = set()
    seen: set[str] = set()
    todo = [stage_module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py
            prefix = ".".join(parts[:i])
            if prefix in seen or parts[0] not in CODE_ROOTS:
                continue
            seen.add(prefix)
            path = _module_path(prefix)
            if path is None:  # an attribute (from pipeline.x import function), not a module
                continue
            if not _code_free_init(path):
                required.add(path)
            if path in _data_readers():
                required.add(_data_readers()[path])
            package = prefix if path.endswith("__init__.py") else prefix.rpartition(".")[0]
            todo.extend(_imported_names(ast.parse((REPO / path).read_text()), package))
    return frozenset(required)


def _pattern(declared: str) -> re.Pattern[str]:
    """A declared dep as a regex; a ``${...}`` template matches any one path component part."""
    return re.compile("[^/]+".join(re.escape(part) for part in re.split(r"\$\{[^}]*\}", declared)))


def _covers(declared: str, path: str) -> bool:
    """``declared`` is ``path``, a folder above it, or (templated) a file inside a required folder."""
    if _pattern(declared).fullmatch(path):
        return True
    if declared.startswith(path + "/"):
        return True
    return any(_pattern(declared).fullmatch("/".join(path.split("/")[:i])) for i in range(1, path.count("/") + 1))


def _stages() -> dict[str, dict]:
    """dvc.yaml stage name → its definition (``foreach`` stages: the ``do`` body)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def dep_problems() -> list[str]:
    """One line per missing or stale code dependency of every dvc.yaml stage."""
    problems = []
    for name, stage in _stages().items():
        words = stage["cmd"].split()
        assert words[0] == "posezoo", f"{name}: cmd does not start with posezoo"
        required = required_paths(f"stages.{words[1]}")
        declared = [d for d in stage.get("deps", []) if d.split("/")[0] in CODE_ROOTS]
        problems += [f"{name}: missing {path}" for path in sorted(required) if not any(_covers(d, path) for d in declared)]
        problems += [f"{name}: stale {d}" for d in declared if not any(_covers(d, path) for path in required)]
        problems += [f"{name}: {d} is already under {parent}" for d in declared for parent in declared
                     if d.startswith(parent + "/")]
    return problems


def test_data_files_all_have_a_reader() -> None:
    """Every non-Python file under pipeline/ is one of DATA_CONSTANTS' paths (else add its constant)."""
    data = [p.relative_to(REPO).as_posix() for p in (REPO / "pipeline").rglob("*")
            if p.is_file() and p.suffix not in {".py", ".pyc"}]
    unread = [p for p in data if not any(p == d or p.startswith(d + "/") for d in DATA_CONSTANTS.values())]
    assert not unread, f"data files no DATA_CONSTANTS entry covers: {unread}"


def test_imports_in_functions_count_and_type_checking_ones_do_not() -> None:
    tree = ast.parse(
        "import numpy\nfrom . import sibling\ndef f():\n    from pipeline.x import y\n"
        "if TYPE_CHECKING:\n    import pipeline.z\nelse:\n    from ..up import w\n"
    )
    assert _imported_names(tree, "pipeline.pkg") == {
        "numpy", "pipeline.pkg", "pipeline.pkg.sibling", "pipeline.x", "pipeline.x.y", "pipeline.up", "pipeline.up.w",
    }


def test_registry_code_and_entry_are_required_and_code_free_inits_are_not() -> None:
    optimize = required_paths("stages.optimize")
    assert {"stages/optimize.py", "pipeline/registry/__init__.py", "pipeline/registry/models", "pipeline/params.py"} <= optimize
    assert "pipeline/__init__.py" not in optimize and _code_free_init("pipeline/__init__.py")


def test_dvc_stages_declare_the_code_they_run() -> None:
    problems = dep_problems()
    assert not problems, "dvc.yaml code deps (fix the stage's deps):\n" + "\n".join(problems)
