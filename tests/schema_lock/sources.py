"""Model sources for the schema-lock tests: one file per version of a signature, written where a test needs it."""

from __future__ import annotations

import textwrap
from pathlib import Path

HEADER = (
    "from __future__ import annotations\nimport enum, dataclasses\nfrom collections.abc import Iterator\n"
    "from blazerpc_core import BlazeApp\napp = BlazeApp()\n"
)

#: ``sub`` before a parameter is inserted in the middle of its signature.
SUB = """
@app.model("sub")
def sub(a: float, b: float) -> float:
    return a - b
"""
#: ``sub`` after: ``offset`` sits between ``a`` and ``b``, so by declaration order it would take b's number.
SUB_INSERTED = """
@app.model("sub")
def sub(a: float, offset: float, b: float) -> float:
    return a - b + offset
"""


def write_app(path: Path, *bodies: str) -> Path:
    """A model file made of ``bodies`` (model definitions using ``app``); returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(textwrap.dedent(body) for body in bodies))
    return path
