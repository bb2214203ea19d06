"""Meta-tests: every hook is documented with its exact signature and exercised by some test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from blazerpc_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("blazerpc_"))


def _signature(name: str) -> str:
    return f"def {name}{inspect.signature(getattr(hookspecs, name))}".replace("'", "")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_exact_signature(hook):
    docs = (ROOT / "docs" / "hooks.md").read_text()
    assert f"### {hook}\n" in docs
    assert _signature(hook) in docs, _signature(hook)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_its_own_test(hook):
    """A test (core or plugin suite) implements the hook itself, not only a default plugin."""
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
    sources += [p.read_text() for p in ROOT.glob("plugins/*/tests/*.py")]
    assert any(f"def {hook}(" in text for text in sources), f"no test implements {hook}"


def test_every_hook_has_a_docstring_saying_when_it_is_called():
    for hook in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        assert "alled" in doc, hook
