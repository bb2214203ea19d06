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
def test_hook_is_implemented_by_some_test_or_plugin(hook):
    sources = [p.read_text() for p in (ROOT / "tests").rglob("*.py")]
    sources += [p.read_text() for p in (ROOT / "blazerpc_core").rglob("*.py") if p.name != "hookspecs.py"]
    assert any(f"def {hook}(" in text for text in sources), f"no implementation of {hook} is tested"


def test_every_hook_has_a_docstring_saying_when_it_is_called():
    for hook in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        assert "alled" in doc, hook
