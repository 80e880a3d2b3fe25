"""The import graph of `shared/`, read with `ast` (nothing is imported), checked against `LAYERS`.

`uv run --frozen python -m devtools.import_graph [--root DIR]` prints the arrows that break the
layering: upward arrows, sideways arrows from one domain to another's service or repository,
imports of `shared` deferred into function bodies, and cycles between modules and between
top-level packages. tests/test_layers.py fails on any of them; `--root` reads another checkout
(`git worktree add /tmp/old <commit>`) to compare figures before and after a change.
"""

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# Bottom-up: a module may import from its own layer and the layers listed before it. A module
# belongs to the longest prefix naming it or a package above it; the root package `shared` names
# only its own `__init__`, so a new top-level module must be given a layer on purpose.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "shared",
        "shared.settings",
        "shared.logs",
        "shared.errors",
        "shared.models",
        "shared.clients",
        "shared.breaker",
        "shared.db",
        "shared.pagination",
        "shared.batching",
        "shared.caching",
        "shared.stats",
        "shared.bounds",
    ),
    # `shared.streaming` is where `shared.deepseek.events` was before the floors were drawn;
    # it stays here, as do the old homes of the workflows below, so an older checkout can be
    # measured against the same table.
    "platform": (
        "shared.http",
        "shared.access",
        "shared.deepseek",
        "shared.queues",
        "shared.streaming",
        "shared.metering",
    ),
    "domains": (
        "shared.projects",
        "shared.prompts",
        "shared.datasets",
        "shared.dialogs",
        "shared.executions",
        "shared.assertions",
    ),
    "workflows": (
        "shared.workflows",
        "shared.gates",
        "shared.evaluations",
        "shared.chat",
        "shared.history",
    ),
}
ROOT_PACKAGE = "shared"
DOMAIN_PACKAGES = LAYERS["domains"]
# A domain's modules that other domains must not import: they reach it through a workflow instead.
DOMAIN_ENTRY_MODULES = ("service", "repository")
REPO_ROOT = Path(__file__).resolve().parent.parent

Kind = Literal["module-level", "deferred", "type-only"]


@dataclass(frozen=True)
class ImportStatement:
    """An import as written: `from module import names`, or `import module` (one per module)."""

    line: int
    kind: Kind
    level: int
    module: str | None
    names: tuple[str, ...]


@dataclass(frozen=True)
class Import:
    """A `shared` module importing another, at one place in its source."""

    importer: str
    imported: str
    location: str
    kind: Kind

    def __str__(self) -> str:
        return f"{self.location}: {self.importer} -> {self.imported} ({self.kind})"


@dataclass(frozen=True)
class Arrow:
    """An edge of the module graph, with the kinds of the statements that draw it."""

    importer: str
    imported: str
    kinds: frozenset[Kind]

    def __str__(self) -> str:
        kinds = ", ".join(sorted(self.kinds))
        return (
            f"{self.importer} [{layer_name(self.importer)}] -> "
            f"{self.imported} [{layer_name(self.imported)}] ({kinds})"
        )


@dataclass
class Analysis:
    """What `shared/` of one checkout breaks of the layering, arrow by arrow."""

    modules: list[str]
    arrows: list[Arrow]
    unlayered: list[str]
    upward: list[Arrow]
    sideways: list[Arrow]
    deferred: list[Import]
    module_cycles: list[list[str]]
    package_cycles: list[list[str]]

    def summary(self) -> str:
        return (
            f"upward={len(self.upward)} sideways={len(self.sideways)} "
            f"deferred={len(self.deferred)} module_cycles={len(self.module_cycles)} "
            f"package_cycles={len(self.package_cycles)}"
        )


def python_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    nodes: Iterable[ast.AST], kind: Kind
) -> Iterator[tuple[ast.Import | ast.ImportFrom, Kind]]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.body, "type-only")
            yield from _import_nodes(node.orelse, kind)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            # An import under TYPE_CHECKING never runs, even inside a function: it stays type-only.
            body_kind: Kind = "type-only" if kind == "type-only" else "deferred"
            yield from _import_nodes(ast.iter_child_nodes(node), body_kind)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node), kind)


def import_statements(path: Path) -> list[ImportStatement]:
    """Every import in a source file, at any depth, in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    statements: list[ImportStatement] = []
    for node, kind in _import_nodes(tree.body, "module-level"):
        if isinstance(node, ast.Import):
            statements.extend(
                ImportStatement(node.lineno, kind, 0, alias.name, ()) for alias in node.names
            )
        else:
            names = tuple(alias.name for alias in node.names)
            statements.append(ImportStatement(node.lineno, kind, node.level, node.module, names))
    return statements


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_exists(root: Path, name: str) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _absolute_module(statement: ImportStatement, importer: str, is_package: bool) -> str | None:
    if statement.level == 0:
        return statement.module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - statement.level + 1]
    return ".".join([*base, statement.module] if statement.module else base)


def _is_shared(module: str | None) -> bool:
    return module is not None and (module == ROOT_PACKAGE or module.startswith(ROOT_PACKAGE + "."))


def shared_imports(root: Path) -> list[Import]:
    """Every import of a `shared` module by a module of `shared/` under root."""
    imports: list[Import] = []
    for path in python_files(root / ROOT_PACKAGE):
        importer = module_name(path, root)
        location = path.relative_to(root).as_posix()
        for statement in import_statements(path):
            module = _absolute_module(statement, importer, path.name == "__init__.py")
            if module is None or not _is_shared(module):
                continue
            # `from shared.x import y` imports the module shared.x.y when there is one.
            submodules = [f"{module}.{name}" for name in statement.names]
            imported = [
                submodule if _module_exists(root, submodule) else module for submodule in submodules
            ] or [module]
            imports.extend(
                Import(importer, target, f"{location}:{statement.line}", statement.kind)
                for target in dict.fromkeys(imported)
            )
    return imports


def arrows_of(imports: Iterable[Import]) -> list[Arrow]:
    kinds: dict[tuple[str, str], set[Kind]] = {}
    for each in imports:
        if each.importer != each.imported:
            kinds.setdefault((each.importer, each.imported), set()).add(each.kind)
    return [Arrow(a, b, frozenset(arrow_kinds)) for (a, b), arrow_kinds in sorted(kinds.items())]


def _owns(prefix: str, module: str) -> bool:
    return module == prefix or (prefix != ROOT_PACKAGE and module.startswith(prefix + "."))


def layer_of(module: str) -> int | None:
    """The rank of a module's layer (0 is the bottom), or None when no prefix names it."""
    matches = [
        (len(prefix), rank)
        for rank, prefixes in enumerate(LAYERS.values())
        for prefix in prefixes
        if _owns(prefix, module)
    ]
    return max(matches)[1] if matches else None


def layer_name(module: str) -> str:
    rank = layer_of(module)
    return "no layer" if rank is None else list(LAYERS)[rank]


def upward_arrows(arrows: Iterable[Arrow]) -> list[Arrow]:
    return [
        arrow
        for arrow in arrows
        if (importer := layer_of(arrow.importer)) is not None
        and (imported := layer_of(arrow.imported)) is not None
        and importer < imported
    ]


def _domain_of(module: str) -> str | None:
    return next((domain for domain in DOMAIN_PACKAGES if _owns(domain, module)), None)


def sideways_arrows(arrows: Iterable[Arrow]) -> list[Arrow]:
    """Arrows from one domain into another domain's service or repository module."""
    found = []
    for arrow in arrows:
        importer, imported = _domain_of(arrow.importer), _domain_of(arrow.imported)
        if importer is None or imported is None or importer == imported:
            continue
        entry_module = arrow.imported.removeprefix(imported + ".").split(".")[0]
        if entry_module in DOMAIN_ENTRY_MODULES:
            found.append(arrow)
    return found


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; each component sorted, components in order of their first member."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        if importer != imported:
            graph.setdefault(importer, set()).add(imported)
    return [component for component in strongly_connected_components(graph) if len(component) > 1]


def top_level_package(module: str) -> str:
    """`shared.prompts` for `shared.prompts.service`; a top-level single-file module is its own."""
    return ".".join(module.split(".")[:2])


def module_cycles(arrows: Iterable[Arrow]) -> list[list[str]]:
    return _cycles((arrow.importer, arrow.imported) for arrow in arrows)


def package_cycles(arrows: Iterable[Arrow]) -> list[list[str]]:
    return _cycles(
        (top_level_package(arrow.importer), top_level_package(arrow.imported)) for arrow in arrows
    )


def analyse(root: Path = REPO_ROOT) -> Analysis:
    imports = shared_imports(root)
    arrows = arrows_of(imports)
    modules = [module_name(path, root) for path in python_files(root / ROOT_PACKAGE)]
    nodes = sorted({*modules, *(arrow.imported for arrow in arrows)})
    return Analysis(
        modules=modules,
        arrows=arrows,
        unlayered=[module for module in nodes if layer_of(module) is None],
        upward=upward_arrows(arrows),
        sideways=sideways_arrows(arrows),
        deferred=[each for each in imports if each.kind == "deferred"],
        module_cycles=module_cycles(arrows),
        package_cycles=package_cycles(arrows),
    )


def report(analysis: Analysis) -> str:
    sections: list[tuple[str, list[str]]] = [
        ("upward arrows (lower layer -> higher layer)", [str(a) for a in analysis.upward]),
        ("sideways arrows between domains", [str(a) for a in analysis.sideways]),
        ("deferred imports of shared modules", [str(each) for each in analysis.deferred]),
        ("module cycles", [", ".join(cycle) for cycle in analysis.module_cycles]),
        ("package cycles", [", ".join(cycle) for cycle in analysis.package_cycles]),
    ]
    if analysis.unlayered:
        sections.insert(0, ("ERROR: modules in no layer of LAYERS", analysis.unlayered))
    lines = [f"modules: {len(analysis.modules)}  import arrows: {len(analysis.arrows)}"]
    for title, entries in sections:
        lines.append(f"{title}: {len(entries)}")
        lines.extend(f"  {entry}" for entry in entries)
    lines.append(analysis.summary())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="checkout to read (default: this one)"
    )
    root = parser.parse_args(argv).root.resolve()
    if not (root / ROOT_PACKAGE).is_dir():
        parser.error(f"{root} has no {ROOT_PACKAGE}/ directory")
    analysis = analyse(root)
    print(report(analysis))
    # Layer violations are the tests' to fail on; a module the table cannot place is a broken table.
    return 1 if analysis.unlayered else 0


if __name__ == "__main__":
    sys.exit(main())
