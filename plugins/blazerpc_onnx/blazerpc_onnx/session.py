"""Opening ONNX Runtime sessions: execution providers and thread counts.

Providers are checked against what this onnxruntime build offers, because
onnxruntime itself only warns about an unknown provider and quietly falls back to the
CPU, which would hide a misconfigured GPU server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blazerpc_core import RegistrationError

#: Calls a remote endpoint rather than computing locally; never a sensible default.
_NOT_DEFAULT = {"AzureExecutionProvider"}
_SUFFIX = "ExecutionProvider"


def resolve_providers(requested: Sequence[str] | None) -> list[str]:
    """Full provider names for ``requested`` (``cpu`` → ``CPUExecutionProvider``).

    With nothing requested: every available provider except remote ones, in
    onnxruntime's priority order (so a GPU build prefers its GPU, then the CPU).
    """
    import onnxruntime

    available = list(onnxruntime.get_available_providers())
    if not requested:
        return [p for p in available if p not in _NOT_DEFAULT]
    by_key = {p.lower(): p for p in available}
    by_key.update({p.lower().removesuffix(_SUFFIX.lower()): p for p in available})
    resolved = []
    for name in requested:
        provider = by_key.get(name.strip().lower())
        if provider is None:
            raise RegistrationError(
                f"ONNX Runtime provider {name!r} is not available in this onnxruntime build; "
                f"available: {', '.join(available)}"
            )
        resolved.append(provider)
    return resolved


def parse_providers(value: str | Sequence[str] | None) -> list[str] | None:
    """``"cuda,cpu"`` (the CLI form) or a list → provider names; empty → None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [item.strip() for item in items if item.strip()]
    return names or None


def open_session(
    path: str | Path,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path``; errors name the file."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"ONNX model {str(path)!r}: no such file")
    options = onnxruntime.SessionOptions()
    if intra_op_threads is not None:
        options.intra_op_num_threads = _threads(intra_op_threads, "intra-op")
    if inter_op_threads is not None:
        options.inter_op_num_threads = _threads(inter_op_threads, "inter-op")
    chosen = resolve_providers(providers)
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:
        raise RegistrationError(f"ONNX model {str(path)!r} could not be loaded: {exc}") from exc


def _threads(value: int, what: str) -> int:
    if value < 0:
        raise RegistrationError(f"ONNX Runtime {what} threads must be 0 (automatic) or more, not {value}")
    return value
