"""The core's layers (DESIGN §1): each module imports only its own layer and those below, with no cycle.

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``. Plugins
import only the public API (``blazerpc_core`` and ``blazerpc_core.plugin``; their tests
may also use ``blazerpc_core.testing``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "blazerpc_core"

#: Lowest first. A module belongs to the first layer one of whose prefixes it starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("markers", "errors", "settings", "naming")),
    ("contract types", ("spec", "schema.fields", "method", "call", "runtime.policy", "runtime.events",
                        "context", "hookspecs")),
    ("mechanisms", ("schema", "registry", "runtime", "server", "model_files")),
    ("default plugins", ("defaults", "observability", "security")),
    ("assembly", ("plugins", "hooks", "sources", "build", "app", "plugin", "__init__")),
    ("shells", ("cli", "testing", "client")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def _layer(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return index
    raise AssertionError(f"module blazerpc_core.{module} is in no layer: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    """Core modules ``path`` imports, as names relative to the package ("" for blazerpc_core itself)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` needs the submodule; ``from pkg import name`` needs pkg itself.
            subs = [f"{node.module}.{a.name}" for a in node.names]
            known = [s for s in subs if s.removeprefix("blazerpc_core.") in MODULES]
            names = known + ([node.module] if len(known) < len(subs) else [])
        for name in names:
            if name == "blazerpc_core":
                found.add("__init__")
            elif name.startswith("blazerpc_core."):
                relative = name.removeprefix("blazerpc_core.")
                if relative in MODULES:
                    found.add(relative)
    return found


GRAPH = {module: _imports(path) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    mine = _layer(module)
    upward = [f"{other} ({LAYERS[_layer(other)][0]})" for other in sorted(GRAPH[module]) if _layer(other) > mine]
    assert not upward, f"blazerpc_core.{module} ({LAYERS[mine][0]}) imports a higher layer: {upward}"


def test_there_is_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for other in sorted(GRAPH[module]):
            if other == module:
                continue
            if state.get(other) == 1:
                cycle = [*stack[stack.index(other):], other]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if other not in state:
                visit(other)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


PUBLIC = {"blazerpc_core", "blazerpc_core.plugin"}


PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/blazerpc_*/**/*.py"))


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(source):
    used = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("blazerpc_core"):
            used.add(node.module)
        elif isinstance(node, ast.Import):
            used.update(a.name for a in node.names if a.name.startswith("blazerpc_core"))
    assert used <= PUBLIC, f"{source.relative_to(ROOT)} imports internal modules: {sorted(used - PUBLIC)}"
