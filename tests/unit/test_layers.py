"""The house: each layer imports only the layers below it, with no circles (README, "Layout").

Floors, bottom to top: the library `trainpipe/` (Prefect-free), `tasks/` (stages: the library, the shared
`tasks.common`, and their own package only), `flows/`, `cli/`. `__main__` modules are entry points on the
top floor; nothing imports them. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"trainpipe": 0, "tasks": 1, "flows": 2, "cli": 3}
TOP = max(FLOORS.values())
SHARED_STAGE_MODULES = {"tasks.common"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in FLOORS for p in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name a file imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a `from pkg import mod` counts as importing pkg.mod)."""
    graph = {}
    for name, path in modules.items():
        graph[name] = {n for n in imported_names(path) if n in modules and n != name}
    return graph


def floor(module: str) -> int:
    return TOP if module.endswith("__main__") else FLOORS[module.split(".")[0]]


def stage(module: str) -> str:
    """The stage a tasks module belongs to: tasks.tune.search -> tasks.tune."""
    return ".".join(module.split(".")[:2])


def test_no_module_imports_a_floor_above_its_own():
    graph = project_imports(project_modules())
    upward = sorted(f"{m} -> {n}" for m, deps in graph.items() for n in deps
                    if floor(n) > floor(m) and not n.endswith("__main__"))
    assert upward == []


def test_nothing_imports_an_entry_point():
    graph = project_imports(project_modules())
    assert sorted(f"{m} -> {n}" for m, deps in graph.items() for n in deps if n.endswith("__main__")) == []


def test_stages_import_no_other_stage():
    graph = project_imports(project_modules())
    crossing = sorted(f"{m} -> {n}" for m, deps in graph.items() for n in deps
                      if m.startswith("tasks.") and n.startswith("tasks.") and n not in SHARED_STAGE_MODULES
                      and n != "tasks" and stage(n) != stage(m))
    assert crossing == []


def test_the_library_does_not_import_prefect():
    modules = project_modules()
    prefect = sorted(m for m, path in modules.items() if floor(m) == 0 and not m.endswith("__main__")
                     and any(n == "prefect" or n.startswith("prefect.") for n in imported_names(path)))
    assert prefect == []


def test_there_are_no_import_circles():
    graph = project_imports(project_modules())
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_checks_see_a_real_graph():
    """Guard against a walker that finds nothing: the known arrows are there."""
    graph = project_imports(project_modules())
    assert "flows.train" in graph["cli.handlers"] or any(n.startswith("flows.") for n in graph["cli.handlers"])
    assert "tasks.ingest" in graph["flows.train"] and "trainpipe.registry" in graph["trainpipe.scoring"]
    assert floor("trainpipe.__main__") == TOP


def test_a_run_that_does_not_tune_does_not_import_optuna():
    """The tuning modules load inside the fit flow only when the spec asks for trials."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, flows.train, cli.main; print('optuna' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_importing_the_flow_and_the_cli_loads_neither_xgboost_nor_its_scientific_stack():
    """xgboost pulls scikit-learn, scipy and pandas (about 2 s here), pandera pandas: only the stages that need them
    load them."""
    import subprocess
    import sys

    code = ("import sys, flows.train, cli.main; "
            "print(sorted(m for m in ('xgboost', 'sklearn', 'scipy', 'pandas', 'pandera') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
