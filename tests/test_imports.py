"""The import graph of binslim/: no cycles, and no module imports one of a higher layer.

Every import counts, at module level or inside a function (a function-level import is still a dependency);
only imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "binslim"

# Bottom to top; the README's module map draws the same. A module may import modules of its own layer or
# below (its own layer only without a cycle); a module not listed here fails the test until it is placed.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "binslim._version",
        "binslim._record",
        "binslim.errors",
        "binslim.envvars",
        "binslim.interrupts",
        "binslim.children",
        "binslim.elf.constants",
    ),
    ("binslim.elf.copy", "binslim.elf.reader"),
    (
        "binslim.elf",
        "binslim.elf.kind",
        "binslim.elf.writer",
        "binslim.elf.symbols",
        "binslim.elf.dynamic",
        "binslim.elf.ldcache",
    ),
    ("binslim.fileops", "binslim.runner", "binslim.resolve"),
    ("binslim.options",),
    ("binslim.stripplan", "binslim.sstrip", "binslim.debuginfo", "binslim.strip"),
    ("binslim.upx", "binslim.goinfo", "binslim._lief_symbols"),
    ("binslim.slim",),
    ("binslim.tree", "binslim.report", "binslim.report_schema", "binslim.progress", "binslim.bundler"),
    ("binslim.inspect",),
    ("binslim.cliargs", "binslim.cli"),
    ("binslim", "binslim.__main__"),
)
# The verification stage is one layer whatever its modules are called (the verify engineer owns its
# inside): it sits with upx, above the strip stage and below slim.
VERIFICATION_LAYER = 6
VERIFICATION_PREFIXES = ("binslim.verifier", "binslim.verification")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The binslim modules ``name`` imports (resolved; a ``from X import y`` of a submodule is X.y)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "binslim")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "binslim":
                return
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def layer_of(name: str) -> int | None:
    if name.startswith(VERIFICATION_PREFIXES):
        return VERIFICATION_LAYER
    for number, layer in enumerate(LAYERS):
        if name in layer:
            return number
    return None


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "binslim.elf.reader" in edges["binslim.strip"] | edges["binslim.stripplan"]
    assert "binslim.elf.constants" in edges["binslim.elf.reader"]
    assert "binslim.upx" in edges["binslim.slim"], "function-level imports count"
    assert "binslim.tree" not in edges["binslim.report"], "TYPE_CHECKING imports do not"


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for child in sorted(edges.get(node, ())):
            if state.get(child) == 1:
                cycle = path[path.index(child) :] + [child]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if child not in state:
                walk(child)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)


def test_every_module_has_a_layer() -> None:
    missing = [name for name in all_modules() if layer_of(name) is None]
    assert not missing, f"place these in LAYERS here (and in the README's module map): {missing}"


def test_lower_layers_never_import_upper_ones() -> None:
    wrong = []
    for name, imported in graph().items():
        own = layer_of(name)
        for other in sorted(imported):
            theirs = layer_of(other)
            if own is not None and theirs is not None and theirs > own:
                wrong.append(f"{name} (layer {own}) imports {other} (layer {theirs})")
    assert not wrong, "\n".join(wrong)
