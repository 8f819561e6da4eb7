"""The rule import-linter cannot state (pyproject.toml has the others): no module of capguard uses a private name
(`_name`) of another of its packages, neither imported nor as an attribute of that package's objects."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import capguard

ROOT = Path(capguard.__file__).parent
NAMEDTUPLE_API = {"_fields", "_replace", "_asdict", "_make", "_field_defaults"}  # public despite the underscore


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """capguard.ledger.bulk -> ledger; capguard.run -> run; capguard -> '' (the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules() -> Iterator[tuple[Path, str, ast.Module]]:
    for path in sorted(ROOT.rglob("*.py")):
        yield path, _module_name(path), ast.parse(path.read_text(), str(path))


def _imported_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _bindings(tree: ast.Module, module: str, is_package: bool) -> dict[str, str]:
    """Local name -> the dotted name it stands for, for every import in the module (at any depth)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = _imported_from(node, module, is_package)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    return bound


def _dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """`a.b.c` with `a` an imported name, as the dotted name it stands for; None for anything else."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, bound)
        return f"{base}.{node.attr}" if base else None
    return None


def _private_of_another_package(dotted: str, importer: str) -> bool:
    """`dotted` names something private (a module or a name) inside a capguard package other than `importer`'s."""
    parts = dotted.split(".")
    return parts[0] == "capguard" and _package(dotted) != _package(importer) and any(map(_private, parts[1:]))


def _cross_package_private_uses(path: Path, module: str, tree: ast.Module) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    where, bound = path.relative_to(ROOT.parent), _bindings(tree, module, is_package)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _imported_from(node, module, is_package)
            names = [f"{source}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            names = [name for name in [_dotted(node, bound)] if name]
        for name in names:
            if _private_of_another_package(name, module):
                yield f"{where}:{node.lineno}: {name}"


def _defined_here(tree: ast.Module) -> set[str]:
    """Every name the module defines or assigns, as a function, class, variable or attribute."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _defined_by_package() -> dict[str, set[str]]:
    defined: dict[str, set[str]] = {}
    for _, module, tree in _modules():
        defined.setdefault(_package(module), set()).update(_defined_here(tree))
    return defined


def _foreign_private_attributes(path: Path, module: str, tree: ast.Module, defined: set[str]) -> Iterator[str]:
    """`obj._x` where no module of this package defines `_x`: another package's object, reached into.
    (`self._x` is the object's own, inherited or not.)"""
    bound = _bindings(tree, module, path.name == "__init__.py")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)) or node.attr in defined | NAMEDTUPLE_API:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        owner = _dotted(node.value, bound)
        if owner is not None and not owner.startswith("capguard"):
            continue  # another library's module (os._exit, sys._getframe): its documented API
        yield f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}"


def test_no_module_imports_a_private_name_of_another_package():
    found = [use for path, module, tree in _modules() for use in _cross_package_private_uses(path, module, tree)]
    assert not found, "private names used across packages; make them public or move the code:\n" + "\n".join(found)


def test_no_module_reaches_into_a_private_attribute_of_another_package():
    defined = _defined_by_package()
    found = [
        use
        for path, module, tree in _modules()
        for use in _foreign_private_attributes(path, module, tree, defined[_package(module)])
    ]
    assert not found, "private attributes of other modules' objects; give them a public API:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for():
    """The leaks issue 12 found, as they were written, are caught (so an empty result above means something)."""
    leak = ast.parse("from capguard.agents.claude.logs import _figures\nfrom capguard.ledger import bulk\nbulk._KEY\n")
    importer = ROOT / "importers" / "claude_scan.py"
    assert len(list(_cross_package_private_uses(importer, "capguard.importers.claude_scan", leak))) == 2
    reach = ast.parse("def backend_of(ledger):\n    return ledger._backend\n")  # importers/ledger_io.py's
    defined = _defined_by_package()
    args = (ROOT / "importers" / "ledger_io.py", "capguard.importers.ledger_io", reach)
    assert len(list(_foreign_private_attributes(*args, defined["importers"]))) == 1
    assert not list(_foreign_private_attributes(*args, defined["ledger"]))  # the ledger's own modules may
    own = ast.parse("from capguard.ledger import sqlite\nsqlite._kind\n")
    assert not list(_cross_package_private_uses(ROOT / "ledger" / "bulk.py", "capguard.ledger.bulk", own))
