"""The package's shape: its modules import each other downward only, with no loop."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "gpt1"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def imports_of(path: Path) -> set[str]:
    """The gpt1 modules `path` imports, at the top or inside functions (relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            # `from . import model` and `from .model import configuration_gpt1` name modules too.
            found |= {target} | {
                f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}")
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gpt1")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in imports_of(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_the_import_graph_has_no_loop():
    graph = import_graph()
    assert "gpt1.train" in graph and "gpt1.model.modeling_gpt1" in graph["gpt1.train"] | graph["gpt1.model"]
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "visiting"
        for target in sorted(graph[module]):
            if target.startswith(module + ".") or module == "gpt1":  # a package importing its own modules
                continue
            assert state.get(target) != "visiting", f"import loop: {' -> '.join([*path, module, target])}"
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_model_files_import_nothing_else_of_ours():
    graph = import_graph()
    for module in ("gpt1.model.configuration_gpt1", "gpt1.model.modeling_gpt1", "gpt1.model"):
        assert all(target.startswith("gpt1.model") for target in graph[module]), (module, graph[module])
