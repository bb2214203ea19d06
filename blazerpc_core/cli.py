"""``blazerpc``: serve models, export the .proto, list models and plugins.

A thin click layer over :class:`~blazerpc_core.server.serve.BlazeServer`. Every option
also reads a ``BLAZERPC_*`` environment variable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import click
import pluggy

from blazerpc_core.discovery import Discovered, build_registry, discover
from blazerpc_core.errors import PluginError, RegistrationError, StartupError
from blazerpc_core.observability.logformat import LEVELS, configure_logging
from blazerpc_core.plugins import describe_plugins, disabled_from_env, make_plugin_manager
from blazerpc_core.registry import ModelRegistry
from blazerpc_core.schema.builder import FILE_NAME, build_schema
from blazerpc_core.settings import BatchSettings, ServeSettings

log = logging.getLogger("blazerpc")
TARGETS_HELP = (
    "TARGET is module:attr, path/to/file.py or path/to/file.py:attr (or a form a plugin adds, "
    "such as a model file); with no TARGET every installed blazerpc.models entry point is used."
)


def _plugin_manager(disabled: tuple[str, ...] = ()) -> pluggy.PluginManager:
    try:
        return make_plugin_manager(disabled=disabled)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc


def _load(
    targets: tuple[str, ...], settings: ServeSettings, pm: pluggy.PluginManager
) -> tuple[list[Discovered], ModelRegistry]:
    try:
        found = discover(targets, settings, pm)
        for item in found:
            for plugin in item.plugins:
                if not pm.is_registered(plugin):
                    pm.register(plugin)
        pm.check_pending()
        return found, build_registry(found, pm)
    except (RegistrationError, PluginError, pluggy.PluginValidationError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        # User code failed while being imported: one line here, the traceback at DEBUG.
        log.debug("loading %s failed", " ".join(targets) or "installed models", exc_info=exc)
        what = " ".join(targets) or "the installed model packages"
        raise click.ClickException(
            f"cannot load {what}: {type(exc).__name__}: {exc} (--log-level DEBUG shows the traceback)"
        ) from exc


def _option(*names: str, env: str, **kwargs: Any) -> Any:
    return click.option(*names, envvar=f"BLAZERPC_{env}", show_envvar=True, **kwargs)


def serve_options() -> list[Any]:
    return [
        _option("--host", env="HOST", default="127.0.0.1", show_default=True, help="Address to bind."),
        _option("--port", env="PORT", type=click.IntRange(0, 65535), default=50051, show_default=True,
                help="Port to bind (0: any free port)."),
        _option("--workers", env="WORKERS", type=click.IntRange(min=1), default=1, show_default=True,
                help="Server processes sharing the port (SO_REUSEPORT) under one supervisor."),
        _option("--grace-period", env="GRACE_PERIOD", type=float, default=10.0, show_default=True,
                help="Seconds in-flight calls get to finish after SIGTERM/SIGINT."),
        _option("--max-threads", "max_workers", env="MAX_THREADS", type=click.IntRange(min=1), default=None,
                help="Size of the thread pool that runs sync model code [max(8, CPUs + 4)]."),
        _option("--max-model-threads", env="MAX_MODEL_THREADS", type=click.IntRange(min=1), default=None,
                help="Pool threads one model may use at once, so a stuck model never starves the others "
                     "[all but two of --max-threads]."),
        _option("--inline-budget-us", env="INLINE_BUDGET_US", type=float, default=100.0, show_default=True,
                help="Sync models measured to finish well within this run on the event loop instead of "
                     "the thread pool (0: always use the pool)."),
        _option("--max-batch-size", env="MAX_BATCH_SIZE", type=click.IntRange(min=1), default=None,
                help="Default rows per batch for batched models [32]."),
        _option("--batch-timeout-ms", env="BATCH_TIMEOUT_MS", type=click.FloatRange(min=0), default=None,
                help="Default longest wait (ms) of the oldest queued request [5]."),
        _option("--max-queue-size", env="MAX_QUEUE_SIZE", type=click.IntRange(min=1), default=None,
                help="Default queue bound (rows) per batched model [1024]."),
        _option("--max-concurrent-batches", env="MAX_CONCURRENT_BATCHES", type=click.IntRange(min=1),
                default=None, help="Default batches of one model running at once [1]."),
        _option("--max-latency-ms", env="MAX_LATENCY_MS", type=click.FloatRange(min=1), default=None,
                help="Default latency target (ms) of the adaptive batching policy [100]."),
        _option("--batch-policy", env="BATCH_POLICY", default=None,
                help="Default batching policy: size-or-timeout, adaptive, or one a plugin adds."),
        _option("--metrics-port", env="METRICS_PORT", type=int, default=None,
                help="Serve Prometheus metrics over HTTP on this port."),
        _option("--tls-cert", env="TLS_CERT", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM certificate chain; enables TLS."),
        _option("--tls-key", env="TLS_KEY", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM private key for --tls-cert."),
        _option("--tls-client-ca", env="TLS_CLIENT_CA", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM CA bundle; when given, clients must present a certificate it signed."),
        _option("--max-message-mb", env="MAX_MESSAGE_MB", type=float, default=64.0, show_default=True,
                help="Largest request message; bigger ones get RESOURCE_EXHAUSTED."),
        _option("--hide-error-details", env="HIDE_ERROR_DETAILS", is_flag=True, default=False,
                help="Answer model failures with INTERNAL and no exception text."),
        _option("--full-error-details", env="FULL_ERROR_DETAILS", is_flag=True, default=False,
                help="Send clients a model exception's whole text; by default they get its type and first "
                     "line, with server file paths cut to file names."),
        _option("--log-format", env="LOG_FORMAT", type=click.Choice(["text", "json"]), default="text",
                show_default=True, help="Access and server log format."),
        _option("--log-level", env="LOG_LEVEL", type=click.Choice(LEVELS, case_sensitive=False), default="INFO",
                show_default=True, help="Logging level."),
        _option("--disable-plugin", "disabled_plugins", env="DISABLE_PLUGINS", multiple=True,
                help="Plugin name not to load (repeatable; see `blazerpc plugins`)."),
    ]


def settings_from(options: dict[str, Any], plugin_names: list[str]) -> ServeSettings:
    extra = {name: options.pop(name) for name in plugin_names}
    batching = BatchSettings(
        max_batch_size=options.pop("max_batch_size"),
        batch_timeout_ms=options.pop("batch_timeout_ms"),
        max_queue_size=options.pop("max_queue_size"),
        max_concurrent_batches=options.pop("max_concurrent_batches"),
        max_latency_ms=options.pop("max_latency_ms"),
        policy=options.pop("batch_policy"),
    )
    options.pop("log_level", None)
    disabled = tuple(options.pop("disabled_plugins") or ()) + disabled_from_env()
    return ServeSettings(batching=batching, disabled_plugins=disabled, extra=extra, **options)


def banner(found: list[Discovered], registry: ModelRegistry, address: str) -> str:
    lines = [f"blazerpc serving {len(registry)} model(s) on {address}"]
    rpcs: dict[int, list[str]] = {}
    for rpc, _, spec in registry.rpcs():
        rpcs.setdefault(id(spec), []).append(rpc)
    for spec in registry:
        lines.append(
            f"  {spec.name} v{spec.version}  [{spec.streaming.value}]  rpc {', '.join(rpcs[id(spec)])}"
        )
    return "\n".join(lines)


def _serve(targets: tuple[str, ...], options: dict[str, Any], plugin_names: list[str]) -> None:
    from blazerpc_core.server.serve import BlazeServer
    from blazerpc_core.server.supervisor import supervise, worker_id

    configure_logging(options["log_level"], options["log_format"])
    settings = settings_from(options, plugin_names)
    supervising = settings.workers > 1 and worker_id() is None
    if supervising and settings.port == 0:
        raise click.ClickException("--workers needs a fixed --port: each worker would bind its own with 0")
    pm = _plugin_manager(settings.disabled_plugins)
    for target in targets or ("installed model packages",):
        log.info("loading %s", target)
    # Resolved once, before any worker starts: a broken target fails here with one line
    # instead of crashing N workers in a restart loop.
    found, registry = _load(targets, settings, pm)
    if supervising:
        # Workers re-execute this command line; see blazerpc_core.server.supervisor.
        sys.exit(supervise(sys.argv[1:], settings.workers, grace_period=settings.grace_period))
    try:
        server = BlazeServer(registry, settings=settings, plugin_manager=pm)
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from exc

    def ready(srv: BlazeServer) -> None:
        text = banner(found, registry, f"{settings.host}:{srv.port}")
        if settings.log_format == "json":
            models = [{"name": s.name, "version": s.version, "shape": s.streaming.value} for s in registry]
            log.info(text.splitlines()[0], extra={"blazerpc": {"address": f"{settings.host}:{srv.port}",
                                                               "models": models}})
        else:
            click.echo(text)
        sys.stdout.flush()

    try:
        asyncio.run(server.serve_forever(on_ready=ready))
    except (StartupError, RegistrationError) as exc:
        raise click.ClickException(str(exc)) from exc


def name_option() -> click.Option:
    """``--name``: taken by every command that loads TARGETs, so ``proto`` writes what ``serve`` serves."""
    return click.Option(
        ["--name", "model_name"], envvar="BLAZERPC_NAME", show_envvar=True, default=None,
        help="Model (and rpc) name for a model-file TARGET a plugin loads; default: the file name without "
             "its suffix.",
    )


def target_settings(options: dict[str, Any], plugin_names: list[str]) -> ServeSettings:
    """Settings for ``proto`` and ``models``: what ``serve`` would load TARGETs with."""
    extra = {name: options.pop(name) for name in plugin_names}
    return ServeSettings(model_name=options.pop("model_name"), extra=extra)


def _plugin_options(pm: pluggy.PluginManager, commands: list[click.Command]) -> list[click.Option]:
    """Options plugins add; one whose name or flag is taken (by ``commands`` or an earlier plugin) is skipped."""
    names = {param.name for command in commands for param in command.params}
    flags = {flag for command in commands for param in command.params for flag in param.opts}
    options: list[click.Option] = []
    for batch in pm.hook.blazerpc_cli_options():
        for option in batch or ():
            if option.name in names or flags.intersection(option.opts):
                continue
            names.add(option.name)
            flags.update(option.opts)
            options.append(option)
    return options


def make_cli() -> click.Group:
    """Build the command line, including options that installed plugins add."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(package_name="blazerpc-core")
    def cli() -> None:
        """Serve typed Python functions as gRPC models (health, reflection, batching, metrics)."""

    # Filled once the commands exist (their own options take precedence); read when one runs.
    plugin_options: list[click.Option] = []

    def plugin_names() -> list[str]:
        return [o.name for o in plugin_options if o.name]

    @click.argument("targets", nargs=-1)
    def serve(targets: tuple[str, ...], **options: Any) -> None:
        """Serve the models named by TARGET(s).

        Prints the models it loaded and the address, answers health checks SERVING once
        ready, and on SIGTERM/SIGINT stops accepting calls, lets in-flight ones finish
        within --grace-period, then exits 0.
        """
        _serve(targets, options, plugin_names())

    for option in reversed(serve_options()):
        serve = option(serve)
    serve.__doc__ = inspect.cleandoc(serve.__doc__ or "") + "\n\n" + TARGETS_HELP
    serve_command = click.command("serve")(serve)
    cli.add_command(serve_command)

    @cli.command("proto")
    @click.argument("targets", nargs=-1)
    @click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=".", show_default=True,
                  help="Directory to write blaze_service.proto into.")
    def proto(targets: tuple[str, ...], output_dir: str, **options: Any) -> None:
        """Write the served schema as blaze_service.proto (compiles with protoc unchanged).

        Takes --name and the plugin options serve takes, so TARGET(s) load as serve loads them.
        """
        pm = _plugin_manager()
        _, registry = _load(targets, target_settings(options, plugin_names()), pm)
        try:
            text = build_schema(registry, pm).proto_text()
        except RegistrationError as exc:
            raise click.ClickException(str(exc)) from exc
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FILE_NAME).write_text(text)
        click.echo(str(out / FILE_NAME))

    @cli.command("models")
    @click.argument("targets", nargs=-1)
    def models(targets: tuple[str, ...], **options: Any) -> None:
        """List the models TARGET(s) (or installed model packages) provide.

        Takes --name and the plugin options serve takes, so TARGET(s) load as serve loads them.
        """
        pm = _plugin_manager()
        found, registry = _load(targets, target_settings(options, plugin_names()), pm)
        rpcs: dict[int, list[str]] = {}
        for rpc, _, spec in registry.rpcs():
            rpcs.setdefault(id(spec), []).append(rpc)
        click.echo(f"{'MODEL':<24}{'VERSION':<10}{'SHAPE':<18}{'RPC':<40}SOURCE")
        for item in found:
            for spec in item.specs:
                click.echo(f"{spec.name:<24}{spec.version:<10}{spec.streaming.value:<18}"
                           f"{', '.join(rpcs.get(id(spec), [])):<40}{item.source}")

    loaders = [serve_command, proto, models]
    for command in loaders:
        command.params.append(name_option())
    try:
        plugin_options.extend(_plugin_options(make_plugin_manager(), loaders))
    except PluginError as exc:
        click.echo(f"warning: {exc}", err=True)
    for command in loaders:
        command.params.extend(plugin_options)

    @cli.command("plugins")
    def plugins() -> None:
        """List loaded plugins (default and installed), their hooks, and disabled ones."""
        pm = _plugin_manager()
        click.echo(f"{'PLUGIN':<24}{'SOURCE':<40}HOOKS")
        for row in describe_plugins(pm):
            hooks = "disabled" if row.disabled else ", ".join(h.removeprefix("blazerpc_") for h in row.hooks)
            click.echo(f"{row.name:<24}{row.source:<40}{hooks}")

    from blazerpc_core.client.cli import client_commands  # `blazerpc call` and `blazerpc health`

    for command in client_commands():
        cli.add_command(command)

    return cli


def main() -> None:
    make_cli()(prog_name="blazerpc")


if __name__ == "__main__":
    main()
