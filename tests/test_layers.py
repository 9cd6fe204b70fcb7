"""The house's layers (docs/architecture.md), checked from the code's own imports.

Every import counts, also one inside a function: a module imports only from
its own layer or those below it, no modules import each other in a circle,
and the launcher uses termite's public modules only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Package (or module) prefix -> its layer, lowest first.  The longest prefix wins.
LAYERS = {
    "termite._core": 1,
    "termite._net": 2,
    "termite._move": 3,
    "termite._balance": 4,
    "termite._runtime": 5,
    "termite._behaviours": 6,
    "termite.gen_server": 6,
    "termite.supervisor": 6,
    "termite.executor": 6,
    "termite.progress_bars": 6,  # below the executor, whose map draws its bars
    "termite.console": 6,  # say: a global name and the runner, below the facade
    "termite.pg": 6,  # process groups: the public side of _net.process_groups
    "termite.io": 6,  # files and standard streams as processes
    "termite": 7,  # the public facade, termite.testing, the commands
    "termite_launcher": 8,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "launcher":
        parts[0] = "termite_launcher"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found = {}
    for folder in ("termite", "launcher"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The termite modules ``name`` imports (``from pkg import mod`` counts as pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in ("termite", "termite_launcher") and t != name)
    return {t for t in found if t in modules}


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _graph() -> dict[str, set[str]]:
    modules = _sources()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in _graph().items()
        for target in sorted(targets)
        if _layer(target) > _layer(name)
    ]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = _graph()
    circles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, "modules that import each other in a circle:\n" + "\n".join(circles)


def _private(module: str) -> bool:
    return any(part.startswith("_") and part != "__main__" for part in module.split(".")[1:])


def test_the_launcher_uses_public_termite_modules_only():
    private = [
        f"{name} imports {target}"
        for name, targets in _graph().items()
        if name.startswith("termite_launcher")
        for target in sorted(targets)
        if target.startswith("termite.") and _private(target)
    ]
    assert not private, "the launcher reaches into termite's private modules:\n" + "\n".join(private)


def test_the_checks_see_imports_inside_functions_and_of_modules_from_packages(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from termite._net import codec as _codec\n\ndef f():\n    import termite._core.kernel\n")
    modules = {"termite._net.codec": None, "termite._core.kernel": None, "termite._net": None}
    assert _imports("termite._move.mod", source, modules) == {"termite._net.codec", "termite._core.kernel"}
