"""How models and their rpcs are named: valid names and versions, Pascal case, version order, labels."""

from __future__ import annotations

import re
from typing import Any

from blazerpc_core.errors import RegistrationError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*$")
_VERSION = re.compile(r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$")
DEFAULT_VERSION = "1"


def pascal_case(name: str) -> str:
    """``text-sentiment`` → ``TextSentiment``: split on non-alphanumerics, capitalise parts."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def version_suffix(version: str) -> str:
    """``2.1`` → ``V2_1``: what a version adds to its own rpc and message names."""
    return "V" + re.sub(r"[^A-Za-z0-9]+", "_", version)


def check_name(name: str, version: str) -> None:
    """Refuse a model name or version that cannot become a protobuf identifier."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegistrationError(
            f"invalid model name {name!r}: use letters, digits and '-', '_' or '.' "
            "between them, starting with a letter"
        )
    if not _VERSION.match(version):
        raise RegistrationError(
            f"invalid version {version!r} for model {name!r}: use letters, digits, '.', '-' or '_'"
        )


def version_key(version: str) -> tuple[Any, ...]:
    """Order versions so that "10" > "9" > "1.2" > "1.10"-style ties resolve numerically."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


def model_label(name: str, version: str) -> str:
    """How every message and log line names one model version: ``'add' version '1'``."""
    return f"{name!r} version {version!r}"
