"""The layer rules of docs/architecture.md, read from the source (no imports executed).

Read side (monitor/) never imports the write side (actions/, guard/, durable/) or the views
(cli/, web/); nothing below the views imports them; only store/ uses SQLAlchemy or redis-py
for chordguard's own state (monitor/sources and actions read Celery's); no import cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "chordguard"
WRITE_SIDE = ("chordguard.actions", "chordguard.guard", "chordguard.durable")
VIEWS = ("chordguard.cli", "chordguard.web", "chordguard.demo", "chordguard.mcp")
DRIVERS = ("sqlalchemy", "redis")
CELERY_STATE_READERS = ("chordguard.monitor.sources", "chordguard.actions")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (relative imports resolved), at any depth."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


GRAPH = {name: imports(name, path) for name, path in modules().items()}


def test_the_read_side_imports_neither_the_write_side_nor_the_views():
    wrong = {name: sorted(m for m in deps if under(m, WRITE_SIDE + VIEWS))
             for name, deps in GRAPH.items() if under(name, ("chordguard.monitor",))}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_nothing_below_the_views_imports_them():
    wrong = {name: sorted(m for m in deps if under(m, VIEWS))
             for name, deps in GRAPH.items()
             if not under(name, VIEWS)
             and name not in ("chordguard", "chordguard.__main__", "chordguard._entry")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_only_the_store_uses_database_drivers_for_chordguard_state():
    wrong = {name: sorted(m for m in deps if under(m, DRIVERS))
             for name, deps in GRAPH.items()
             if not under(name, ("chordguard.store",) + CELERY_STATE_READERS)}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_no_import_cycles_between_modules():
    names = set(GRAPH)
    edges = {n: {d for d in deps if d in names and d != n and not n.startswith(d + ".")}
             for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep):] + [dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for name in sorted(names):
        if name not in state:
            visit(name, [name])
    assert cycles == []
