"""The code layout stays readable: no function over 80 lines (its docstring not counted) outside bench/,
no import cycle between Quartet modules (module-level imports), and none between Quartet's packages
(every import, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".venv-vllm", "bench", "outputs", "logs", "data", ".git"}
MAX_FUNCTION_LINES = 80


def quartet_files() -> dict[str, Path]:
    """Dotted module name -> file, for every first-party Python file outside bench/ (tests included)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def function_lengths(tree: ast.AST) -> list[tuple[str, int, int]]:
    """``(name, first line, lines without the docstring)`` of every function in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            value = getattr(first, "value", None) if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                length -= first.end_lineno - first.lineno + 1
            out.append((node.name, node.lineno, length))
    return out


def imported_modules(
    module: str, path: Path, tree: ast.AST, known: set[str], top_level_only: bool
) -> set[str]:
    """First-party modules that ``module`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known and n != module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a node path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def parsed() -> dict[str, tuple[Path, ast.AST]]:
    return {m: (p, ast.parse(p.read_text(encoding="utf-8"))) for m, p in quartet_files().items()}


def test_no_function_over_80_lines_outside_bench():
    too_long = [
        f"{path.relative_to(ROOT)}:{line} {name}() has {n} lines"
        for path, tree in parsed().values()
        for name, line, n in function_lengths(tree)
        if n > MAX_FUNCTION_LINES
    ]
    assert too_long == []


def test_the_checks_can_fail():
    long_body = "\n".join(f"    x{i} = {i}" for i in range(81))
    tree = ast.parse(f'def f():\n    """Doc."""\n{long_body}\n')
    assert function_lengths(tree) == [("f", 1, 82)]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules_or_packages():
    files = parsed()
    known = set(files)
    modules = {m: imported_modules(m, p, t, known, top_level_only=True) for m, (p, t) in files.items()}
    assert find_cycle(modules) is None
    packages: dict[str, set[str]] = {}
    for m, (p, t) in files.items():
        if m.startswith("tests") or "." not in m:
            continue  # tests and entry points (train.py, eval.py, ...) import everything; nothing imports them
        top = m.split(".")[0]
        deps = {d.split(".")[0] for d in imported_modules(m, p, t, known, top_level_only=False)}
        packages.setdefault(top, set()).update(d for d in deps if d != top)
    assert find_cycle(packages) is None, packages
    assert "models" in packages and not packages["models"] & {"lightning_modules", "datamodules", "inference"}


#: The documented layer order (docs/architecture.md): a package imports only packages in earlier layers.
LAYERS: list[set[str]] = [
    {"utils"},
    {"models"},
    {"inference"},
    {"reasoning"},
    {"algorithms"},
    {"evaluation"},
    {"datamodules"},
    {"lightning_modules"},
    {"checkpoints"},
    {"callbacks"},
    {"runners", "stages"},
]


def package_graph() -> dict[str, set[str]]:
    """Top-level package -> the first-party packages it imports (every import, lazy ones included)."""
    files = parsed()
    known = set(files)
    packages: dict[str, set[str]] = {}
    for m, (p, t) in files.items():
        if m.startswith("tests") or "." not in m:
            continue
        top = m.split(".")[0]
        deps = {d.split(".")[0] for d in imported_modules(m, p, t, known, top_level_only=False)}
        packages.setdefault(top, set()).update(d for d in deps if d != top)
    return packages


def layer_violations(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    """``"a imports b"`` for every import of a package in the same or a later layer."""
    rank = {pkg: i for i, layer in enumerate(layers) for pkg in layer}
    return sorted(
        f"{pkg} imports {dep}"
        for pkg, deps in graph.items()
        for dep in deps
        if pkg in rank and dep in rank and rank[dep] >= rank[pkg]
    )


def test_packages_follow_the_documented_layer_order():
    graph = package_graph()
    assert set(graph) <= {p for layer in LAYERS for p in layer} | {"bench", "scripts", "tests_vllm"}, graph
    assert layer_violations(graph, LAYERS) == []
    assert "lightning_modules" not in graph.get("stages", set())
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert " → ".join(", ".join(sorted(layer)) for layer in LAYERS) in text


def test_the_layer_rule_can_fail():
    assert layer_violations({"a": {"b"}, "b": set()}, [{"b"}, {"a"}]) == []
    assert layer_violations({"a": {"b"}, "b": {"a"}}, [{"b"}, {"a"}]) == ["b imports a"]
    assert layer_violations({"a": {"c"}, "c": set()}, [{"a", "c"}]) == ["a imports c"]
