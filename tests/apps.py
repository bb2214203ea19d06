"""Apps shared by several test modules."""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

import numpy as np

from blazerpc_core import BlazeApp, TensorInput, TensorOutput

INT64_MAX = 2**63 - 1


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


@dataclasses.dataclass
class Box:
    x: float
    y: float
    label: str


class Stats(NamedTuple):
    total: float
    count: int
    labels: list[str]


def add_app() -> BlazeApp:
    """One model, ``add(a: float, b: float) -> float``: the smallest app a server test can call."""
    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    return app


def varied_app() -> BlazeApp:
    """One model per row of the type table, plus multi-output and versions."""
    app = BlazeApp()

    @app.model("add")
    def add(a: float, b: float) -> float:
        return a + b

    @app.model("echo-scalars")
    def echo_scalars(s: str, i: int, flag: bool, raw: bytes) -> str:
        return f"{s}|{i}|{flag}|{raw.hex()}"

    @app.model("count-words")
    def count_words(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    @app.model("maybe")
    def maybe(x: int | None) -> str:
        return "none" if x is None else f"got {x}"

    @app.model("weights")
    def weights(scores: dict[str, float]) -> dict[str, float]:
        total = sum(scores.values()) or 1.0
        return {k: v / total for k, v in scores.items()}

    @app.model("next-color")
    def next_color(color: Color) -> Color:
        members = list(Color)
        return members[(members.index(color) + 1) % len(members)]

    @app.model("area")
    def area(box: Box, boxes: list[Box]) -> Stats:
        everything = [box, *boxes]
        return Stats(sum(b.x * b.y for b in everything), len(everything), [b.label for b in everything])

    @app.model("shift")
    def shift(box: Box, dx: float = 1.5) -> Box:
        return Box(box.x + dx, box.y, box.label.upper())

    @app.model("flip")
    def flip(x: np.ndarray) -> np.ndarray:
        return np.flip(x, axis=0) if x.ndim else x  # a 0-d array has no axis to flip

    @app.model("classify")
    def classify(x: TensorInput[np.float32, "batch", 8]) -> TensorOutput[np.float32, "batch", 2]:
        return x[:, :2] * 2

    @app.model("version-me", version=1)
    def v1(x: int) -> int:
        return min(x + 1, INT64_MAX)  # saturating: total over int64, as the fuzz suite needs

    @app.model("version-me", version=2)
    def v2(x: int) -> int:
        return min(x + 2, INT64_MAX)

    return app
