"""Token authentication: bearer tokens or API keys, with optional per-model allow lists.

Off unless tokens are configured. Tokens never come from the command line in clear:

* ``--auth-tokens-file PATH`` (or ``BLAZERPC_AUTH_TOKENS_FILE``): one credential per line,
  ``TOKEN``, ``NAME TOKEN`` or ``NAME TOKEN MODEL[,MODEL...]``; ``#`` starts a comment;
* ``BLAZERPC_AUTH_TOKENS``: comma-separated bare tokens (every model allowed).

A client sends ``authorization: Bearer <token>`` or ``x-api-key: <token>``; either value
is stripped of surrounding spaces and tabs, and one that is then empty or holds anything
but visible ASCII (a CR/LF, a NUL, another control character) is refused as invalid
credentials rather than cleaned up. Missing or unknown tokens get UNAUTHENTICATED; a
known token outside its allow list gets PERMISSION_DENIED. Presented tokens are hashed and
compared with every configured hash in constant time, so neither the position nor the
length of a match leaks.

Health and reflection are separate services, so this middleware (which wraps inference
calls only) never sees them: load balancers and ``grpcurl`` keep working without a
token. ``--auth-all-services`` also guards them (and plugin services) through a grpclib
request listener.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from blazerpc_core.errors import PermissionDenied, RegistrationError, Unauthenticated
from blazerpc_core.markers import hookimpl
from blazerpc_core.schema.builder import SERVICE_FULL_NAME

if TYPE_CHECKING:
    from grpclib.events import RecvRequest

    from blazerpc_core.call import CallContext, CallNext, Middleware
    from blazerpc_core.context import ServerContext
    from blazerpc_core.settings import ServeSettings

log = logging.getLogger("blazerpc.auth")

FILE_OPTION = "auth_tokens_file"
ALL_SERVICES_OPTION = "auth_all_services"
FILE_ENV = "BLAZERPC_AUTH_TOKENS_FILE"
TOKENS_ENV = "BLAZERPC_AUTH_TOKENS"
#: The management service checks its own tokens (``--management-token-file``, else these).
MANAGEMENT = "/blazerpc.ManagementService/"
MISSING = "missing credentials: send 'authorization: Bearer <token>' or 'x-api-key: <token>'"
INVALID = "invalid credentials"
_SHORT = 16
#: What a presented token may consist of: visible ASCII, no spaces (configured tokens are
#: whitespace-separated words, so nothing a client could match is lost).
_TOKEN = re.compile(r"[!-~]+")
#: What an ``authorization`` header may hold at all: visible ASCII, spaces and tabs.
_HEADER = re.compile(r"[\t -~]*")
_OWS = " \t"


@dataclass(frozen=True)
class Credential:
    """One accepted token, known by ``name`` in logs (the token itself is never logged)."""

    name: str
    digest: bytes
    models: frozenset[str] | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _credential(token: str, name: str | None, models: frozenset[str] | None, where: str) -> Credential:
    if len(token) < _SHORT:
        log.warning("auth token %s is shorter than %d characters; use a long random token", where, _SHORT)
    digest = _digest(token)
    return Credential(name=name or f"key-{digest.hex()[:8]}", digest=digest, models=models)


def parse_token_file(text: str, *, source: str) -> list[Credential]:
    """Credentials from the token file format (see the module docstring)."""
    credentials = []
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        where = f"{source}:{number}"
        if not fields:
            continue
        if len(fields) > 3:
            raise RegistrationError(f"{where}: expected 'TOKEN', 'NAME TOKEN' or 'NAME TOKEN MODELS'")
        name, token = (None, fields[0]) if len(fields) == 1 else (fields[0], fields[1])
        models = None
        if len(fields) == 3:
            models = frozenset(m for m in fields[2].split(",") if m)
            if not models:
                raise RegistrationError(f"{where}: empty model list")
        credentials.append(_credential(token, name, models, where))
    return credentials


def load_credentials(settings: ServeSettings) -> list[Credential]:
    """Every configured credential: the token file's, then ``BLAZERPC_AUTH_TOKENS``."""
    credentials: list[Credential] = []
    path = settings.extra.get(FILE_OPTION) or os.environ.get(FILE_ENV)
    if path:
        file = Path(path)
        try:
            text = file.read_text()
            mode = file.stat().st_mode
        except OSError as exc:
            raise RegistrationError(f"cannot read auth tokens file {path}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("auth tokens file %s is readable by other users; chmod 600 it", path)
        credentials += parse_token_file(text, source=str(path))
    for index, token in enumerate(t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",")):
        if token:
            credentials.append(_credential(token, None, None, f"#{index + 1} of {TOKENS_ENV}"))
    seen: dict[str, Credential] = {}
    for credential in credentials:
        if credential.name in seen:
            raise RegistrationError(f"auth credential name {credential.name!r} is used twice")
        seen[credential.name] = credential
    if len({c.digest for c in credentials}) != len(credentials):
        raise RegistrationError("the same auth token is configured twice")
    return credentials


def presented_token(metadata: Any) -> str | None:
    """The token a call carries, from ``authorization: Bearer`` or ``x-api-key``; None if neither.

    Both headers get the same treatment: surrounding spaces and tabs are stripped, and a
    value that is then empty or not visible ASCII comes back as ``""``, which no credential
    matches. Stripping CR/LF instead would let ``"<token>\\r\\n..."`` through.
    """
    header = metadata.get("authorization")
    if header is not None:
        if not _HEADER.fullmatch(header):
            return ""
        scheme, _, token = header.strip(_OWS).partition(" ")
        if scheme.lower() == "bearer":
            return _usable(token)
    key = metadata.get("x-api-key")
    return None if key is None else _usable(key)


def _usable(value: Any) -> str:
    token = str(value).strip(_OWS)
    return token if _TOKEN.fullmatch(token) else ""


class TokenChecker:
    """Matches presented tokens against the configured credentials in constant time."""

    def __init__(self, credentials: Sequence[Credential]) -> None:
        self.credentials = tuple(credentials)

    def identify(self, token: str) -> Credential | None:
        if not token:
            return None  # malformed or empty: see presented_token
        presented = _digest(token)
        found = None
        # No early exit: every call costs the same whichever credential matches.
        for credential in self.credentials:
            if hmac.compare_digest(credential.digest, presented):
                found = credential
        return found


class AuthMiddleware:
    """Refuses inference calls without a valid token, or to a model the token may not call."""

    def __init__(self, checker: TokenChecker, *, all_services: bool = False) -> None:
        self.checker = checker
        self.all_services = all_services

    async def __call__(self, ctx: CallContext, call_next: CallNext) -> Any:
        token = presented_token(ctx.metadata)
        if token is None:
            ctx.trailing_metadata["www-authenticate"] = "Bearer"
            raise Unauthenticated(MISSING)
        credential = self.checker.identify(token)
        if credential is None:
            ctx.trailing_metadata["www-authenticate"] = "Bearer"
            raise Unauthenticated(INVALID)
        model = ctx.model.name
        if not credential.allows(model):
            raise PermissionDenied(f"credential {credential.name!r} may not call model {model!r}")
        ctx.principal = credential.name
        return await call_next(ctx)


def service_guard(checker: TokenChecker) -> Callable[[RecvRequest], Coroutine[Any, Any, None]]:
    """A grpclib ``RecvRequest`` listener requiring a valid token on every non-inference call."""
    inference = f"/{SERVICE_FULL_NAME}/"

    async def guard(event: RecvRequest) -> None:
        if event.method_name.startswith((inference, MANAGEMENT)):
            return  # the middleware answers inference calls, the management service its own
        token = presented_token(event.metadata)
        if token is None:
            raise GRPCError(Status.UNAUTHENTICATED, MISSING)
        if checker.identify(token) is None:
            raise GRPCError(Status.UNAUTHENTICATED, INVALID)

    return guard


@hookimpl
def blazerpc_cli_options() -> Sequence[click.Option]:
    return [
        click.Option(
            ["--auth-tokens-file", FILE_OPTION], envvar=FILE_ENV, show_envvar=True, default=None,
            type=click.Path(dir_okay=False),
            help="File of accepted tokens ('TOKEN', 'NAME TOKEN' or 'NAME TOKEN MODEL,...' per line); "
                 f"enables auth. {TOKENS_ENV} may also hold comma-separated tokens.",
        ),
        click.Option(
            ["--auth-all-services", ALL_SERVICES_OPTION], envvar="BLAZERPC_AUTH_ALL_SERVICES",
            show_envvar=True, is_flag=True, default=False,
            help="Also require a token for health, reflection and plugin services.",
        ),
    ]


@hookimpl
def blazerpc_middleware(settings: ServeSettings) -> Sequence[Middleware] | None:
    credentials = load_credentials(settings)
    all_services = bool(settings.extra.get(ALL_SERVICES_OPTION))
    if not credentials:
        if all_services:
            raise RegistrationError(f"--auth-all-services needs tokens (--auth-tokens-file or {TOKENS_ENV})")
        return None
    return [AuthMiddleware(TokenChecker(credentials), all_services=all_services)]


@hookimpl
def blazerpc_services(context: ServerContext) -> None:
    # Not a service: the guard must be in place before the server binds, and this is the
    # build-time hook that sees the server context.
    for middleware in context.middleware:
        if isinstance(middleware, AuthMiddleware) and middleware.all_services:
            context.request_listeners.append(service_guard(middleware.checker))
