"""``blazerpc call`` and ``blazerpc health``: the client from a shell, a probe or a CI job.

``call`` takes ``NAME=VALUE`` inputs (JSON, a bare word as a string, ``@FILE.npy`` a tensor,
``@FILE.json`` a JSON value, any other ``@FILE`` its bytes) and prints the result as JSON.
``health`` exits with a code a container runtime can act on:

* 0 — SERVING
* 1 — NOT_SERVING or UNKNOWN
* 2 — the service is unknown to the server (NOT_FOUND, or SERVICE_UNKNOWN when watching)
* 3 — no answer: connection refused, TLS failure, timeout, no health service, credentials refused
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np

from blazerpc_core.client.aio import AsyncClient
from blazerpc_core.client.errors import CallError
from blazerpc_core.client.retry import RetryPolicy
from blazerpc_core.client.schema import FieldInfo, Method

SERVING, NOT_SERVING, UNKNOWN_SERVICE, UNREACHABLE = 0, 1, 2, 3
_HEALTH_CODES = {"SERVING": SERVING, "NOT_SERVING": NOT_SERVING, "UNKNOWN": NOT_SERVING,
                 "SERVICE_UNKNOWN": UNKNOWN_SERVICE}
#: Exit code of ``call`` when its arguments cannot make a request (``click``'s usage-error code).
BAD_INPUT = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _connection_options(command: Any) -> Any:
    """TLS and credential options shared by both commands (credentials also from the environment)."""
    options = [
        click.option("--token", envvar="BLAZERPC_TOKEN", show_envvar=True, default=None,
                     help="Bearer token, sent as 'authorization: Bearer TOKEN'."),
        click.option("--api-key", envvar="BLAZERPC_API_KEY", show_envvar=True, default=None,
                     help="API key, sent as 'x-api-key'."),
        click.option("--tls", is_flag=True, default=False, help="Use TLS, trusting the system's CAs."),
        click.option("--tls-ca", envvar="BLAZERPC_TLS_CA", show_envvar=True, default=None,
                     type=click.Path(exists=True, dir_okay=False), help="PEM CA bundle to trust (implies --tls)."),
        click.option("--tls-cert", envvar="BLAZERPC_CLIENT_CERT", show_envvar=True, default=None,
                     type=click.Path(exists=True, dir_okay=False), help="PEM client certificate, for mutual TLS."),
        click.option("--tls-key", envvar="BLAZERPC_CLIENT_KEY", show_envvar=True, default=None,
                     type=click.Path(exists=True, dir_okay=False), help="PEM private key of --tls-cert."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _client(address: str, timeout: float, options: dict[str, Any], retry: RetryPolicy | None = None) -> AsyncClient:
    return AsyncClient(
        address, timeout=timeout, token=options["token"], api_key=options["api_key"], tls=options["tls"],
        ca_file=options["tls_ca"], cert_file=options["tls_cert"], key_file=options["tls_key"], retry=retry,
        health_checks=False,
    )


# --- blazerpc call ------------------------------------------------------------------------


def parse_value(text: str, field: FieldInfo | None) -> Any:
    """One ``NAME=VALUE`` value, read as its field's type suggests."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise click.BadParameter(f"no such file: {path}")
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".json":
            return json.loads(path.read_text())
        data = path.read_bytes()
        return data.decode() if field is not None and field.type.endswith("string") else data
    textual = field is not None and field.type.split()[-1] in ("string", "bytes") and not field.streamed
    if textual and not text.startswith('"'):
        return text  # `text=42` means the string "42"
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: an enum member, a string


def parse_inputs(method: Method, pairs: tuple[str, ...]) -> dict[str, Any]:
    fields = {f.name: f for f in method.info.inputs}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE")
        values[name] = parse_value(text, fields.get(name))
    return values


def to_json(value: Any) -> Any:
    """A result as JSON: tensors as ``{"dtype", "shape", "data"}``, bytes as ``{"base64": ...}``."""
    if isinstance(value, np.ndarray):
        data = value
        if data.dtype.name == "bfloat16":
            data = data.astype(np.float32)
        elif data.dtype.kind == "c":
            data = np.stack([data.real, data.imag], axis=-1)  # complex: [real, imag] pairs
        return {"dtype": value.dtype.name, "shape": list(value.shape), "data": data.tolist()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_fields(method: Method, result: Any) -> dict[str, Any]:
    return {method.output_field: result} if method.output_field is not None else dict(result)


def _save_tensor(fields: dict[str, Any], output: Path) -> dict[str, Any]:
    tensors = [name for name, value in fields.items() if isinstance(value, np.ndarray)]
    if len(tensors) != 1:
        _fail(f"--output saves one tensor result; this result has {len(tensors)}", BAD_INPUT)
    name = tensors[0]
    np.save(output, fields[name])
    array = fields[name]
    return {**fields, name: {"dtype": array.dtype.name, "shape": list(array.shape), "file": str(output)}}


def _print(fields: dict[str, Any]) -> None:
    click.echo(json.dumps(to_json(fields)))


async def _call(address: str, model: str | None, pairs: tuple[str, ...], version: str | None,
                timeout: float, output: Path | None, options: dict[str, Any]) -> None:
    async with _client(address, timeout, options) as client:
        if model is None:
            for info in await client.models():
                inputs = ", ".join(f"{f.name}: {'stream ' if f.streamed else ''}{f.type}" for f in info.inputs)
                outputs = ", ".join(f"{f.name}: {f.type}" for f in info.outputs)
                label = info.name + (f" v{info.version}" if info.version else "")
                click.echo(f"{label:<28}{info.shape:<18}{info.rpc:<32}({inputs}) -> ({outputs})")
            return
        method = await client.method(model, version)
        try:
            values = parse_inputs(method, pairs)
        except (click.BadParameter, ValueError) as exc:
            _fail(f"INVALID_ARGUMENT: {getattr(exc, 'message', exc)}", BAD_INPUT)
        try:
            if method.server_streaming:
                if output is not None:
                    _fail("--output takes one tensor result; a streaming model prints JSON lines", BAD_INPUT)
                async for item in client.stream(model, values, version=version):
                    _print(_as_fields(method, item))
                return
            fields = _as_fields(method, await client.call(model, values, version=version))
        except (TypeError, ValueError) as exc:
            _fail(f"INVALID_ARGUMENT: {exc}", BAD_INPUT)
        _print(_save_tensor(fields, output) if output is not None else fields)


@click.command("call")
@click.argument("address")
@click.argument("model", required=False)
@click.argument("inputs", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--version", "model_version", default=None, help="Call this version's own rpc (Predict<Model>V<n>).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Deadline of the call in seconds.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the tensor result to this .npy file (the JSON then names the file).")
@_connection_options
def call_command(address: str, model: str | None, inputs: tuple[str, ...], model_version: str | None,
                 timeout: float, output: Path | None, **options: Any) -> None:
    """Call MODEL on the server at ADDRESS (host:port) through reflection, and print the result as JSON.

    Each VALUE is JSON; a bare word that is not JSON is a string (a string input takes
    any text as is); @FILE.npy loads a tensor, @FILE.json a JSON value, any other @FILE
    its bytes. A streamed input takes a JSON list. A tensor prints as
    {"dtype", "shape", "data"} (and may be given that way); a streaming model prints one
    JSON line per item. Without MODEL, lists the server's models. Errors print
    "Error: STATUS: message" and exit 1 (2 for arguments that make no request).
    """
    try:
        asyncio.run(_call(address, model, inputs, model_version, timeout, output, options))
    except CallError as exc:
        _fail(str(exc), 1)
    except ValueError as exc:  # a malformed address, or TLS files that do not load
        _fail(str(exc), BAD_INPUT)


# --- blazerpc health ----------------------------------------------------------------------


def _health_exit(error: CallError) -> NoReturn:
    from grpclib.const import Status

    _fail(str(error), UNKNOWN_SERVICE if error.status is Status.NOT_FOUND else UNREACHABLE)


async def _watch(client: AsyncClient, service: str, timeout: float | None) -> int:
    last = UNREACHABLE
    try:
        async with asyncio.timeout(timeout):
            previous = None
            async for status in client.watch_health(service):
                if status != previous:
                    click.echo(status)
                    previous = status
                last = _HEALTH_CODES.get(status, NOT_SERVING)
        if last != UNKNOWN_SERVICE:
            click.echo("Error: the server ended the watch", err=True)
            last = UNREACHABLE
    except TimeoutError:
        pass  # watched for as long as asked
    return last


async def _health(address: str, service: str, watch: bool, timeout: float | None, options: dict[str, Any]) -> int:
    async with _client(address, timeout or 5.0, options, RetryPolicy(max_attempts=1)) as client:
        if watch:
            return await _watch(client, service, timeout)
        status = await client.health(service)
        click.echo(status)
        return _HEALTH_CODES.get(status, NOT_SERVING)


@click.command("health")
@click.argument("address")
@click.option("--service", default="", show_default=True,
              help="Service to ask about: '' (the whole server), blazerpc.InferenceService, blazerpc.model.NAME.")
@click.option("--watch", is_flag=True, default=False, help="Stream status changes, one line each, until interrupted.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds to wait for the answer [5]; with --watch, how long to watch [until interrupted].")
@_connection_options
def health_command(address: str, service: str, watch: bool, timeout: float | None, **options: Any) -> None:
    """Ask the server at ADDRESS for its health, print the status, and exit with it.

    Exit codes: 0 SERVING; 1 NOT_SERVING or UNKNOWN; 2 the service is unknown (NOT_FOUND);
    3 no answer (unreachable, TLS failure, timeout, no health service, refused credentials).
    With --watch, the exit code is that of the last status seen (3 if the stream broke).
    Suitable as a Kubernetes exec probe or a container HEALTHCHECK.
    """
    try:
        code = asyncio.run(_health(address, service, watch, timeout, options))
    except CallError as exc:
        _health_exit(exc)
    except ValueError as exc:
        _fail(str(exc), UNREACHABLE)
    sys.exit(code)


def client_commands() -> Iterator[click.Command]:
    """The commands ``blazerpc`` adds for the client."""
    yield call_command
    yield health_command
