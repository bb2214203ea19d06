"""``blazerpc``: serve models, export the .proto, list models and plugins, call and probe servers.

A thin click layer over the one assembly path (:mod:`blazerpc_core.build`). Every option
also reads a ``BLAZERPC_*`` environment variable. Commands that load TARGETs (``serve``,
``proto``, ``models``) load them once, before their options are parsed, so the options
of plugins an app brings are known; the plugin manager made for that is the one the
server is built with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from blazerpc_core.build import Assembly, assemble, build_server, discover_sources
from blazerpc_core.errors import PluginError, RegistrationError, StartupError
from blazerpc_core.hooks import Hooks
from blazerpc_core.method import FILE_NAME
from blazerpc_core.observability.logformat import LEVELS, configure_logging
from blazerpc_core.plugins import describe_plugins, disabled_from_env, make_plugin_manager
from blazerpc_core.schema.compat import compare, read_reference
from blazerpc_core.schema.lock import lock_of, write_lock
from blazerpc_core.schema.proto_text import render_proto
from blazerpc_core.server.host import ModelEntry
from blazerpc_core.server.lifecycle import BlazeServer
from blazerpc_core.settings import BatchSettings, ServeSettings
from blazerpc_core.sources import Discovered

log = logging.getLogger("blazerpc")
TARGETS_HELP = (
    "TARGET is module:attr, path/to/file.py or path/to/file.py:attr (or a form a plugin adds, "
    "such as a model file); with no TARGET (and no --model-repository) every installed blazerpc.models "
    "entry point is used."
)
LOADERS = ("serve", "proto", "models")


def _option(*names: str, env: str, **kwargs: Any) -> Any:
    return click.option(*names, envvar=f"BLAZERPC_{env}", show_envvar=True, **kwargs)


def batching_options() -> list[Any]:
    """One server option per batching knob of :class:`BatchSettings` that has a flag."""
    options = []
    for knob in dataclasses.fields(BatchSettings):
        flag = knob.metadata.get("flag")
        if not flag:
            continue
        minimum = knob.metadata.get("minimum")
        kind: Any
        if knob.type in ("int | None", int):
            kind = click.IntRange(min=minimum)
        elif knob.type in ("float | None", float):
            kind = click.FloatRange(min=minimum)
        else:
            kind = str
        env = flag.removeprefix("--").replace("-", "_").upper()
        options.append(_option(
            flag, f"batching_{knob.name}", env=env, type=kind, default=None,
            help=f"Default for batched models: {knob.metadata['help']} [{knob.metadata['default']}]",
        ))
    return options


def serve_options() -> list[Any]:
    return [
        _option("--host", env="HOST", default="127.0.0.1", show_default=True, help="Address to bind."),
        _option("--port", env="PORT", type=click.IntRange(0, 65535), default=50051, show_default=True,
                help="Port to bind (0: any free port)."),
        _option("--workers", env="WORKERS", type=click.IntRange(min=1), default=1, show_default=True,
                help="Server processes sharing the port (SO_REUSEPORT) under one supervisor."),
        _option("--grace-period", env="GRACE_PERIOD", type=click.FloatRange(min=0), default=10.0, show_default=True,
                help="Seconds in-flight calls get to finish after SIGTERM/SIGINT (after --drain-delay)."),
        _option("--drain-delay", env="DRAIN_DELAY", type=click.FloatRange(min=0), default=0.0, show_default=True,
                help="Seconds to keep accepting calls after SIGTERM while health says NOT_SERVING, so load "
                     "balancers stop sending first; set it to cover their health-check interval."),
        _option("--max-threads", "max_workers", env="MAX_THREADS", type=click.IntRange(min=1), default=None,
                help="Size of the thread pool that runs sync model code [max(8, CPUs + 4)]."),
        _option("--max-model-threads", env="MAX_MODEL_THREADS", type=click.IntRange(min=1), default=None,
                help="Pool threads one model may use at once, so a stuck model never starves the others "
                     "[all but two of --max-threads]."),
        _option("--inline-budget-us", env="INLINE_BUDGET_US", type=click.FloatRange(min=0), default=None,
                help="Sync models measured to finish well within this run on the event loop instead of "
                     "the thread pool (0: always use the pool) [100, or twice a thread hop's measured "
                     "cost where that is more, up to 1000]."),
        *batching_options(),
        _option("--on-load-error", env="ON_LOAD_ERROR", type=click.Choice(["fail", "skip"]), default="fail",
                show_default=True, help="A model that fails to load stops the start (fail) or is left out (skip)."),
        _option("--model-control", env="MODEL_CONTROL", type=click.Choice(["none", "explicit", "poll"]),
                default="none", show_default=True,
                help="none: the served models are fixed; explicit: the management service may load, reload and "
                     "unload them; poll: as explicit, and --model-repository is watched for changes."),
        _option("--model-repository", env="MODEL_REPOSITORY", type=click.Path(file_okay=False), default=None,
                help="Directory of model sources (.py files, model files plugins load); all are served at start, "
                     "and management sources resolve inside it."),
        _option("--poll-interval", env="POLL_INTERVAL", type=click.FloatRange(min=0.1), default=2.0,
                show_default=True, help="Seconds between looks at --model-repository with --model-control poll."),
        _option("--metrics-port", env="METRICS_PORT", type=click.IntRange(0, 65535), default=None,
                help="Serve Prometheus metrics over HTTP on this port."),
        _option("--tls-cert", env="TLS_CERT", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM certificate chain; enables TLS."),
        _option("--tls-key", env="TLS_KEY", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM private key for --tls-cert."),
        _option("--tls-client-ca", env="TLS_CLIENT_CA", type=click.Path(exists=True, dir_okay=False), default=None,
                help="PEM CA bundle; when given, clients must present a certificate it signed."),
        _option("--max-message-mb", env="MAX_MESSAGE_MB", type=click.FloatRange(min=0, min_open=True), default=64.0,
                show_default=True, help="Largest request message; bigger ones get RESOURCE_EXHAUSTED."),
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
        _option("--reload", "dev_reload", env="RELOAD", is_flag=True, default=False,
                help="Development: restart the server when a TARGET's source files change."),
        # Connection limits: docs/security.md, "Connection limits".
        _option("--max-connections", env="MAX_CONNECTIONS", type=click.IntRange(min=1), default=None,
                help="Open connections at most; more are closed at once [3/4 of the open-file limit, "
                     "at most 10000]."),
        _option("--handshake-timeout", env="HANDSHAKE_TIMEOUT", type=click.FloatRange(min=0), default=10.0,
                show_default=True, help="Seconds a new connection gets to finish TLS and the HTTP/2 preface."),
        _option("--idle-timeout", env="IDLE_TIMEOUT", type=click.FloatRange(min=0), default=300.0,
                show_default=True, help="Seconds without a call before a connection is closed (0: never)."),
        _option("--first-message-timeout", env="FIRST_MESSAGE_TIMEOUT", type=click.FloatRange(min=0),
                default=30.0, show_default=True,
                help="Seconds a unary or server-streaming call's request may take to arrive (0: no limit)."),
        _option("--max-inflight-mb", env="MAX_INFLIGHT_MB", type=click.FloatRange(min=0), default=256.0,
                show_default=True, help="Request megabytes being received at once, over all connections; "
                                        "more get RESOURCE_EXHAUSTED."),
        _option("--max-concurrent-streams", env="MAX_CONCURRENT_STREAMS", type=click.IntRange(min=1), default=100,
                show_default=True, help="Calls one connection may have open; more are refused (REFUSED_STREAM)."),
        _option("--max-resets-per-second", env="MAX_RESETS_PER_SECOND", type=click.FloatRange(min=0),
                default=100.0, show_default=True,
                help="Cancelled calls a connection may average per second before it is closed (rapid reset)."),
        _option("--compression", env="COMPRESSION", type=click.Choice(["identity", "gzip"]), default="identity",
                show_default=True, help="gzip: compress responses for clients that accept gzip; identity: only "
                                        "when the client compressed its request. Requests may always be gzip."),
        # Schema evolution: docs/schema.md.
        _option("--schema-lock", env="SCHEMA_LOCK", type=click.Path(dir_okay=False), default=None,
                help="Keep the field numbers of this lock (from `blazerpc proto --lock`); new fields get unused "
                     "numbers, removed ones are reserved, breaking changes are refused [a model package's own lock]."),
        _option("--allow-breaking", env="ALLOW_BREAKING", is_flag=True, default=False,
                help="Serve even when the schema breaks clients of the lock (each change is logged as a warning)."),
    ]


def name_option() -> click.Option:
    """``--name``: taken by every command that loads TARGETs, so ``proto`` writes what ``serve`` serves."""
    return click.Option(
        ["--name", "model_name"], envvar="BLAZERPC_NAME", show_envvar=True, default=None,
        help="Model (and rpc) name for a model-file TARGET a plugin loads; default: the file name without "
             "its suffix.",
    )


def settings_from(options: dict[str, Any], plugin_names: Sequence[str]) -> ServeSettings:
    """ServeSettings from parsed options; plugin options land in ``extra``."""
    options = dict(options)
    extra = {name: options.pop(name) for name in plugin_names if name in options}
    knobs = {k.removeprefix("batching_"): options.pop(k) for k in list(options) if k.startswith("batching_")}
    for transient in ("log_level", "dev_reload", "targets"):
        options.pop(transient, None)
    disabled = tuple(options.pop("disabled_plugins", None) or ()) + disabled_from_env()
    fields = {f.name for f in dataclasses.fields(ServeSettings)}
    return ServeSettings(
        batching=BatchSettings(**knobs), disabled_plugins=disabled, extra=extra,
        **{k: v for k, v in options.items() if k in fields},
    )


# -- loading TARGETs once, before the final parse --------------------------------------------


class Loaded:
    """What the pre-parse of a loader command found: the hooks (one plugin manager) and the models."""

    def __init__(self) -> None:
        self.hooks: Hooks | None = None
        self.found: list[Discovered] | None = None
        self.error: click.ClickException | None = None


def _value_options(command: click.Command) -> set[str]:
    """Flags of ``command`` that take a value (their next token is not a TARGET)."""
    flags: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and not param.count:
            flags.update(param.opts)
    return flags


def _looks_like_target(token: str) -> bool:
    return ":" in token or token.endswith(".py") or os.sep in token or Path(token).exists()


def _scan_targets(command: click.Command, args: Sequence[str]) -> list[str]:
    """The TARGET tokens of ``args``, knowing only the options already declared.

    An unknown option (an app plugin's, not loaded yet) is assumed to take the next token
    as its value unless that token looks like a target (a ``:``, ``.py``, a path).
    """
    takes_value = _value_options(command)
    targets: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token == "--":
            targets += tokens[i:]
            break
        if token.startswith("-") and token != "-":
            if "=" in token:
                continue
            if token in takes_value or (i < len(tokens) and not _looks_like_target(tokens[i])
                                        and not tokens[i].startswith("-")):
                i += 1
            continue
        targets.append(token)
    return targets


def _preload(command: click.Command, args: Sequence[str], loaded: Loaded) -> list[click.Option]:
    """Load the TARGETs in ``args`` with the options known so far; returns every plugin option then known."""
    # Installed plugins' options are parsed here too, so TARGETs load with their values (and
    # their callbacks run before an app module is imported, e.g. TensorFlow's thread pools).
    installed = _plugin_options(_installed_options(), [command])
    probe = click.Command(command.name, params=[*command.params, *installed])
    targets = _scan_targets(probe, args)
    if any(a in ("-h", "--help") for a in args) and not targets:
        return []
    try:
        ctx = probe.make_context(command.name or "serve", list(args), resilient_parsing=True)
    except click.ClickException:
        return []
    options = {k: v for k, v in ctx.params.items() if k != "targets"}
    settings = settings_from(options, [o.name for o in installed if o.name])
    _discover(loaded, targets, settings)
    if loaded.hooks is None:
        return []
    return _plugin_options(loaded.hooks.cli_options(), [command])


def _discover(loaded: Loaded, targets: Sequence[str], settings: ServeSettings) -> None:
    """One plugin manager, and the models TARGETs name; a failure is kept for the command to report."""
    try:
        loaded.hooks = Hooks(make_plugin_manager(disabled=settings.disabled_plugins))
        loaded.found = discover_sources(targets, settings, loaded.hooks)
    except (RegistrationError, PluginError) as exc:
        loaded.error = click.ClickException(str(exc))
    except Exception as exc:
        # User code failed while being imported: one line here, the traceback at DEBUG.
        log.debug("loading %s failed", " ".join(targets) or "installed models", exc_info=exc)
        what = " ".join(targets) or "the installed model packages"
        loaded.error = click.ClickException(
            f"cannot load {what}: {type(exc).__name__}: {exc} (--log-level DEBUG shows the traceback)"
        )


def _installed_options() -> list[click.Option]:
    try:
        return Hooks(make_plugin_manager()).cli_options()
    except PluginError as exc:
        click.echo(f"warning: {exc}", err=True)
        return []


def _plugin_options(candidates: Sequence[click.Option], commands: Sequence[click.Command]) -> list[click.Option]:
    """Options plugins add; one whose name or flag is taken (by ``commands`` or an earlier plugin) is skipped."""
    names = {param.name for command in commands for param in command.params}
    flags = {flag for command in commands for param in command.params for flag in param.opts}
    options: list[click.Option] = []
    for option in candidates:
        if option.name in names or flags.intersection(option.opts):
            continue
        names.add(option.name)
        flags.update(option.opts)
        options.append(option)
    return options


def _assembly(loaded: Loaded, targets: tuple[str, ...], settings: ServeSettings) -> Assembly:
    if loaded.hooks is None and loaded.error is None:
        _discover(loaded, targets, settings)  # the command line was built without its arguments
    if loaded.error is not None:
        raise loaded.error
    hooks, found, loaded.hooks, loaded.found = loaded.hooks, loaded.found, None, None  # used once
    try:
        return assemble(targets=targets, settings=settings, hooks=hooks, found=found)
    except (RegistrationError, PluginError) as exc:
        raise click.ClickException(str(exc)) from exc


# -- serve -----------------------------------------------------------------------------------


def banner(assembly: Assembly, address: str) -> str:
    registry = assembly.registry
    lines = [f"blazerpc serving {len(registry)} model(s) on {address}"]
    rpcs: dict[int, list[str]] = {}
    for rpc, _, spec in registry.rpcs():
        rpcs.setdefault(id(spec), []).append(rpc)
    for spec in registry:
        served = ", ".join(rpcs.get(id(spec), []))
        lines.append(f"  {spec.name} v{spec.version}  [{spec.streaming.value}]  rpc {served}")
    return "\n".join(lines)


def _serve(targets: tuple[str, ...], options: dict[str, Any], plugin_names: list[str], loaded: Loaded) -> None:
    from blazerpc_core.server.supervisor import supervise, worker_id

    configure_logging(options["log_level"], options["log_format"])
    if options.get("dev_reload") and worker_id() is None:
        from blazerpc_core.server.reloader import run_with_reload

        sys.exit(run_with_reload(sys.argv[1:], targets))
    settings = settings_from(options, plugin_names)
    supervising = settings.workers > 1 and worker_id() is None
    if supervising and settings.port == 0:
        raise click.ClickException("--workers needs a fixed --port: each worker would bind its own with 0")
    # Resolved once, before any worker starts: a broken target fails here with one line
    # instead of crashing N workers in a restart loop.
    assembly = _assembly(loaded, targets, settings)
    if supervising:
        try:
            assembly.schema()  # a breaking schema change is refused once, before any worker starts
        except RegistrationError as exc:
            raise click.ClickException(str(exc)) from exc
        # Workers re-execute this command line; see blazerpc_core.server.supervisor.
        sys.exit(supervise(sys.argv[1:], settings.workers, grace_period=settings.drain_delay + settings.grace_period))
    try:
        server = build_server(assembly=assembly)
    except (RegistrationError, PluginError) as exc:
        raise click.ClickException(str(exc)) from exc

    def ready(srv: BlazeServer) -> None:
        address = f"{settings.host}:{srv.port}"
        text = banner(assembly, address)
        if settings.log_format == "json":
            models = [{"name": s.name, "version": s.version, "shape": s.streaming.value} for s in srv.host.registry]
            log.info(text.splitlines()[0], extra={"blazerpc": {"address": address, "models": models}})
        else:
            click.echo(text)
        sys.stdout.flush()

    try:
        asyncio.run(server.serve_forever(on_ready=ready, on_model=_print_model(settings)))
    except (StartupError, RegistrationError) as exc:
        raise click.ClickException(str(exc)) from exc


def _print_model(settings: ServeSettings) -> Callable[[ModelEntry], None]:
    def report(entry: ModelEntry) -> None:
        if entry.error:
            log.error("model %s failed to load: %s", entry.label, entry.error)
            return
        line = f"model {entry.label} ready (load {entry.load_seconds:.2f}s, warm-up {entry.warm_seconds:.2f}s)"
        if settings.log_format == "json":
            log.info(line, extra={"blazerpc": {"model": entry.spec.name, "version": entry.spec.version,
                                               "load_seconds": entry.load_seconds,
                                               "warm_seconds": entry.warm_seconds}})
        else:
            click.echo(line, err=True)

    return report


# -- the command line ------------------------------------------------------------------------


def make_cli(argv: Sequence[str] | None = None) -> click.Group:
    """Build the command line, with the options of installed plugins and of the apps TARGETs name.

    ``argv`` (without the program name) lets a loader command load its TARGETs first.
    """
    args = list(argv or ())

    @click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(package_name="blazerpc-core")
    def cli() -> None:
        """Serve typed Python functions as gRPC models (health, reflection, batching, metrics)."""

    loaded = Loaded()
    plugin_options: list[click.Option] = []

    def plugin_names() -> list[str]:
        return [o.name for o in plugin_options if o.name]

    @click.argument("targets", nargs=-1)
    def serve(targets: tuple[str, ...], **options: Any) -> None:
        """Serve the models named by TARGET(s).

        Prints each model as it loads (with its load and warm-up time) and then the
        models and the address; health answers NOT_SERVING until every model is ready,
        then SERVING. On SIGTERM/SIGINT it reports NOT_SERVING, keeps accepting for
        --drain-delay, sends GOAWAY, lets in-flight calls finish within --grace-period,
        then exits 0.
        """
        _serve(targets, options, plugin_names(), loaded)

    for option in reversed(serve_options()):
        serve = option(serve)
    serve.__doc__ = inspect.cleandoc(serve.__doc__ or "") + "\n\n" + TARGETS_HELP
    serve_command = click.command("serve")(serve)
    cli.add_command(serve_command)

    @cli.command("proto")
    @click.argument("targets", nargs=-1)
    @click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=".", show_default=True,
                  help="Directory to write blaze_service.proto into.")
    @click.option("--lock", "lock_file", type=click.Path(dir_okay=False), default=None,
                  help="Schema lock (e.g. blaze_service.lock): its field numbers are kept, then it is written with "
                       "this schema (new fields appended, removed ones reserved); breaking changes are refused.")
    @click.option("--check-against", type=click.Path(exists=True, dir_okay=False), default=None,
                  help="Write nothing: list the changes since OLD (a .proto, read with grpcio-tools, or a lock) and "
                       "exit 1 if one breaks clients. A lock here (or --lock) numbers the schema, as serve would.")
    @click.option("--allow-breaking", is_flag=True, default=False,
                  help="Write the schema and lock even when they break clients of the lock (each change is logged).")
    def proto(
        targets: tuple[str, ...], output_dir: str, lock_file: str | None, check_against: str | None,
        allow_breaking: bool, **options: Any,
    ) -> None:
        """Write the served schema as blaze_service.proto (compiles with protoc unchanged).

        Takes --name and the plugin options serve takes, so TARGET(s) load as serve loads them.
        With --lock, field numbers never change silently (docs/schema.md).
        """
        settings = target_settings(options, plugin_names())
        settings.allow_breaking = allow_breaking
        if lock_file and Path(lock_file).exists():
            settings.schema_lock = lock_file
        elif check_against and not check_against.endswith(".proto"):
            settings.schema_lock = check_against
        assembly = _assembly(loaded, targets, settings)
        numbering = assembly.numbering()
        try:
            if check_against is not None:
                click.get_current_context().exit(_check_against(assembly, check_against))
            schema = assembly.schema(numbering.apply)
        except RegistrationError as exc:
            raise click.ClickException(str(exc)) from exc
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / FILE_NAME).write_text(render_proto(schema.file))
        click.echo(str(out / FILE_NAME))
        if lock_file:
            numbering.remember(schema.file, assembly.registry.rpcs())
            write_lock(numbering.promised, lock_file)
            click.echo(lock_file)

    @cli.command("models")
    @click.argument("targets", nargs=-1)
    def models(targets: tuple[str, ...], **options: Any) -> None:
        """List the models TARGET(s) (or installed model packages) provide.

        Takes --name and the plugin options serve takes, so TARGET(s) load as serve loads them.
        """
        assembly = _assembly(loaded, targets, target_settings(options, plugin_names()))
        rpcs: dict[int, list[str]] = {}
        for rpc, _, spec in assembly.registry.rpcs():
            rpcs.setdefault(id(spec), []).append(rpc)
        click.echo(f"{'MODEL':<24}{'VERSION':<10}{'SHAPE':<18}{'RPC':<40}SOURCE")
        for spec in assembly.registry:
            source = assembly.origins[(spec.name, spec.version)].source if (spec.name, spec.version) in \
                assembly.origins else "plugin"
            click.echo(f"{spec.name:<24}{spec.version:<10}{spec.streaming.value:<18}"
                       f"{', '.join(rpcs.get(id(spec), [])):<40}{source}")

    loaders = {"serve": serve_command, "proto": proto, "models": models}
    for command in loaders.values():
        command.params.append(name_option())
    if args and args[0] in loaders:
        plugin_options.extend(_preload(loaders[args[0]], args[1:], loaded))
    if loaded.hooks is None:
        plugin_options.extend(_plugin_options(_installed_options(), list(loaders.values())))
    for command in loaders.values():
        command.params.extend(plugin_options)

    @cli.command("plugins")
    def plugins() -> None:
        """List loaded plugins (default and installed), their hooks, and disabled ones."""
        try:
            pm = make_plugin_manager()
        except PluginError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{'PLUGIN':<24}{'SOURCE':<40}HOOKS")
        for row in describe_plugins(pm):
            hooks = "disabled" if row.disabled else ", ".join(h.removeprefix("blazerpc_") for h in row.hooks)
            click.echo(f"{row.name:<24}{row.source:<40}{hooks}")

    from blazerpc_core.client.cli import client_commands  # `blazerpc call` and `blazerpc health`

    for command in client_commands():
        cli.add_command(command)
    return cli


def _check_against(assembly: Assembly, reference: str) -> int:
    """``proto --check-against``: print each change since ``reference``; 1 when one breaks clients."""
    old = read_reference(reference)
    schema = assembly.schema(assembly.numbering().renumber)
    changes = compare(old, lock_of(schema.file, assembly.registry.rpcs()))
    for change in changes:
        click.echo(f"{'BREAKING' if change.breaking else 'ok'}  {change}")
    breaking = sum(c.breaking for c in changes)
    if breaking:
        click.echo(f"{breaking} breaking change(s) against {reference}", err=True)
        return 1
    click.echo(f"no breaking change against {reference} ({len(changes)} compatible)", err=True)
    return 0


def target_settings(options: dict[str, Any], plugin_names: list[str]) -> ServeSettings:
    """Settings for ``proto`` and ``models``: what ``serve`` would load TARGETs with."""
    extra = {name: options.pop(name) for name in plugin_names if name in options}
    return ServeSettings(model_name=options.pop("model_name", None), extra=extra)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    make_cli(args)(args=args, prog_name="blazerpc")


if __name__ == "__main__":
    main()
