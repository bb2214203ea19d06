"""RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload, mapped onto the model host (DESIGN §10).

The rules are the management service's: loading and unloading answer FAILED_PRECONDITION
unless the server runs with ``--model-control explicit`` (or ``poll``); with auth
configured, the three rpcs need a token (the management tokens when
``--management-token-file`` is given, else the inference tokens). Sources resolve as the
host resolves them (installed model packages, entries of ``--model-repository``), with
one addition for Triton clients, which load a model by name: a name that is no source
but the stem of exactly one repository entry (``classify`` for ``classify.py``) loads
that entry. Loading a model that is already served reloads it, as Triton does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from grpclib.const import Status

from blazerpc_core.defaults.open_inference.tensor_form import Forms
from blazerpc_core.errors import BlazeError, InvalidArgument, RegistrationError, client_text
from blazerpc_core.security.auth import (
    INVALID,
    MISSING,
    TokenChecker,
    load_credentials,
    parse_token_file,
    presented_token,
)
from blazerpc_core.server.host import ModelEntry, ModelHost, ModelState
from blazerpc_core.server.status import public_text
from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.open_inference")

#: The management plugin's option naming a separate token file for changing models.
MANAGEMENT_TOKEN_OPTION = "management_token_file"
#: Triton's names for our states.
_STATES = {
    ModelState.READY: "READY", ModelState.LOADING: "LOADING", ModelState.UNLOADING: "UNLOADING",
    ModelState.FAILED: "UNAVAILABLE",
}


def repository_checker(settings: ServeSettings) -> TokenChecker | None:
    """Who may use the repository rpcs: the management tokens, else the inference tokens, else anyone."""
    path = settings.extra.get(MANAGEMENT_TOKEN_OPTION)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RegistrationError(f"cannot read management token file {path}: {exc.strerror}") from exc
        return TokenChecker(parse_token_file(text, source=str(path)))
    credentials = load_credentials(settings)
    return TokenChecker(credentials) if credentials else None


class Repository:
    """The repository rpcs over one model host; see the module docstring."""

    def __init__(self, host: ModelHost, settings: ServeSettings, forms: Forms, checker: TokenChecker | None) -> None:
        self._host = host
        self._settings = settings
        self._forms = forms
        self._checker = checker

    def authorize(self, metadata: Any) -> None:
        if self._checker is None:
            return
        token = presented_token(metadata)
        if token is None:
            raise BlazeError(MISSING, status=Status.UNAUTHENTICATED)
        if self._checker.identify(token) is None:
            raise BlazeError(INVALID, status=Status.UNAUTHENTICATED)

    # -- RepositoryIndex ------------------------------------------------------------------

    def index(self, ready_only: bool) -> list[dict[str, Any]]:
        """``ModelIndex`` rows: served, loading and failed models, then repository entries not loaded."""
        rows = []
        sources = set()
        for entry in self._host.all_entries():
            sources.add(entry.origin.source)
            state = _STATES.get(entry.state, entry.state.value)
            if ready_only and state != "READY":
                continue
            reason = entry.error
            if entry.state is ModelState.READY:
                form = self._forms.of(entry.model)
                reason = f"no Open Inference tensor form: {form.reason}" if form.reason else ""
            rows.append({"name": entry.spec.name, "version": entry.spec.version, "state": state, "reason": reason})
        if not ready_only:
            for name in self._repository_entries():
                if name not in sources and not any(Path(source).name == name for source in sources):
                    rows.append({"name": name, "state": "UNAVAILABLE", "reason": "not loaded"})
        return rows

    def _repository_entries(self) -> list[str]:
        root = self._settings.model_repository
        if not root or not Path(root).is_dir():
            return []
        return sorted(p.name for p in Path(root).iterdir() if not p.name.startswith((".", "_")))

    # -- RepositoryModelLoad / Unload -----------------------------------------------------

    def _require_control(self, rpc: str) -> None:
        if self._settings.model_control not in ("explicit", "poll"):
            raise BlazeError(
                f"{rpc} changes the served models; start the server with --model-control explicit (or poll)",
                status=Status.FAILED_PRECONDITION,
            )

    async def load(self, request: Any) -> list[ModelEntry]:
        """Load (or, for a served model, reload) what ``model_name`` names."""
        self._require_control("RepositoryModelLoad")
        name = request.model_name
        if not name:
            raise InvalidArgument("RepositoryModelLoad needs a model_name")
        if request.parameters:
            key = next(iter(request.parameters))
            raise InvalidArgument(
                f"RepositoryModelLoad parameter {client_text(key)} is not supported: blazerpc loads models from "
                "their source as they are (no config override or model files in the request)"
            )
        if self._host.registry.versions(name):
            return await _changing(self._host.reload(name, None))
        return await _changing(self._host.load(self._source_for(name)))

    async def unload(self, request: Any) -> list[ModelEntry]:
        self._require_control("RepositoryModelUnload")
        if not request.model_name:
            raise InvalidArgument("RepositoryModelUnload needs a model_name")
        return await _changing(self._host.unload(request.model_name, None))

    def _source_for(self, name: str) -> str:
        """``name`` itself, or the one repository entry whose stem it is (a Triton client loads by model name)."""
        if "/" in name or "\\" in name or name.startswith("."):
            return name
        entries = self._repository_entries()
        if name in entries:
            return name
        matches = [entry for entry in entries if Path(entry).stem == name]
        if len(matches) > 1:
            raise InvalidArgument(f"model_name {name!r} matches several repository entries ({', '.join(matches)}); "
                                  "name the file")
        return matches[0] if matches else name


async def _changing(change: Any) -> list[ModelEntry]:
    """Await a host change, turning its errors into statuses (the old state is intact on failure)."""
    try:
        entries: list[ModelEntry] = await change
    except BlazeError:
        raise
    except LookupError as exc:
        raise BlazeError(f"not found: {public_text(exc)}", status=Status.NOT_FOUND) from None
    except PermissionError as exc:
        raise BlazeError(public_text(exc), status=Status.PERMISSION_DENIED) from None
    except RegistrationError as exc:
        raise InvalidArgument(public_text(exc)) from None
    except Exception as exc:
        log.warning("a repository change failed", exc_info=exc)
        raise BlazeError(f"{type(exc).__name__}: {public_text(exc)}") from None
    return entries
