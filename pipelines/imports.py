"""The project's import graph, read from the source without running it: which project
modules (`models`, `pipelines`, `edge`) a module imports when it is imported, that is its
`import` statements outside function bodies, and their closure. `pipelines.dag` builds each
stage's dependencies from it."""

from __future__ import annotations

import ast
from pathlib import Path

from pipelines import paths

PACKAGES = ("models", "pipelines", "edge")


def module_path(module: str, root: Path = paths.ROOT) -> Path | None:
    """The file of a project module (a package's `__init__.py`), None if it is not one."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_level(tree: ast.AST):
    """The nodes run when the module is imported: not the bodies of functions."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        yield from _module_level(node)


def imports(module: str, root: Path = paths.ROOT) -> set[str]:
    """The project modules `module` imports at module level (with their parent packages)."""
    found = set()
    for node in _module_level(ast.parse(module_path(module, root).read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if module_path(child, root) else node.module)
    project = {m for m in found if m.split(".")[0] in PACKAGES and module_path(m, root)}
    return project | {parent for m in project for parent in _parents(m)}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(roots, root: Path = paths.ROOT) -> set[str]:
    """`roots`, their parent packages and everything they import at module level, transitively."""
    todo = [*roots, *(p for r in roots for p in _parents(r))]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports(module, root) - seen)
    return seen


def files(modules, root: Path = paths.ROOT) -> list[str]:
    return sorted(module_path(m, root).relative_to(root).as_posix() for m in modules)
