"""Tiny torch models built at test time, and the files ``blazerpc serve`` takes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def mlp(seed: int = 0) -> torch.nn.Module:
    """512 → 32 → 10, in eval mode, with fixed weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(512, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).eval()


class TwoHeads(torch.nn.Module):
    """Two inputs, two outputs: ``(a @ W + b.sum(1, keepdim=True), a * 2)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(a) + b.sum(1, keepdim=True), a * 2


def save_script(module: torch.nn.Module, path: Path) -> Path:
    """``torch.jit.script`` + ``torch.jit.save`` (deprecation warnings of torch 2.x silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def save_traced(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(module, example), str(path))
    return path


def save_export(
    module: torch.nn.Module, examples: tuple[torch.Tensor, ...], path: Path, *, dynamic: bool = True
) -> Path:
    """``torch.export`` with a dynamic first dimension on every input, then ``torch.export.save``."""
    shapes = tuple({0: torch.export.Dim("batch")} for _ in examples) if dynamic else None
    program = torch.export.export(module, examples, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path
