"""Default plugin ``management``: ``blazerpc.ManagementService`` and ``--model-control poll``.

See :mod:`.service` for the rpcs and who may call them, :mod:`.poll` for following a
model repository's files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from blazerpc_core.context import ServerContext
from blazerpc_core.defaults.management.descriptors import management_file
from blazerpc_core.defaults.management.poll import RepositoryPoller
from blazerpc_core.defaults.management.service import ManagementService
from blazerpc_core.errors import RegistrationError
from blazerpc_core.markers import hookimpl
from blazerpc_core.security.auth import TokenChecker, load_credentials, parse_token_file

TOKEN_FILE_OPTION = "management_token_file"
POLLER_KEY = "management-poller"


@hookimpl
def blazerpc_cli_options() -> Sequence[click.Option]:
    return [
        click.Option(
            ["--management-token-file", TOKEN_FILE_OPTION], envvar="BLAZERPC_MANAGEMENT_TOKEN_FILE",
            show_envvar=True, default=None, type=click.Path(dir_okay=False),
            help="Tokens (auth token file format) for blazerpc.ManagementService, instead of the inference tokens; "
                 "enables auth on it.",
        ),
    ]


def _checker(context: ServerContext) -> TokenChecker | None:
    path = context.settings.extra.get(TOKEN_FILE_OPTION)
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise RegistrationError(f"cannot read management token file {path}: {exc.strerror}") from exc
        return TokenChecker(parse_token_file(text, source=str(path)))
    credentials = load_credentials(context.settings)
    return TokenChecker(credentials) if credentials else None


@hookimpl(trylast=True)
def blazerpc_services(context: ServerContext) -> list[Any]:
    settings = context.settings
    if settings.model_control == "poll" and not settings.model_repository:
        raise RegistrationError("--model-control poll needs --model-repository DIR to watch")
    context.descriptors.add_file(management_file())
    return [ManagementService(context.host, settings, _checker(context))]


@hookimpl
def blazerpc_startup(context: ServerContext) -> None:
    settings = context.settings
    if settings.model_control != "poll" or not settings.model_repository:
        return
    poller = RepositoryPoller(context.host, Path(settings.model_repository), settings.poll_interval)
    context.state[POLLER_KEY] = asyncio.get_running_loop().create_task(poller.run(), name="blazerpc-repository-poll")


@hookimpl
async def blazerpc_shutdown(context: ServerContext) -> None:
    task = context.state.pop(POLLER_KEY, None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
