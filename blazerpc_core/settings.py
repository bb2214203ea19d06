"""Server settings: one typed object built from the command line, env vars or code."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _knob(help: str, default: str | None = None, *, flag: str | None = None, minimum: float | None = None) -> Any:
    """A batching knob: unset (None) unless given; ``help``, ``default`` and ``flag`` feed the CLI and docs."""
    return field(default=None, metadata={"help": help, "default": default, "flag": flag, "minimum": minimum})


@dataclass
class BatchSettings:
    """Batching knobs, declared once here for the decorator, the app, the CLI and the docs.

    None means "not set here", so model > app > server precedence works. Each field's
    metadata gives its help text, its default when nothing sets it, its command-line
    flag (None: not a server option) and its smallest allowed value.
    """

    batch: bool | None = _knob("Batch this model (True), or never (False); default: when it opts in.")
    max_batch_size: int | None = _knob("Rows per batch.", "32", flag="--max-batch-size", minimum=1)
    batch_timeout_ms: float | None = _knob(
        "Longest wait (ms) of the oldest queued request.", "5", flag="--batch-timeout-ms", minimum=0
    )
    max_queue_size: int | None = _knob("Queue bound (rows) per batched model.", "1024", flag="--max-queue-size",
                                       minimum=1)
    max_concurrent_batches: int | None = _knob(
        "Batches of one model running at once.", "1", flag="--max-concurrent-batches", minimum=1
    )
    max_latency_ms: float | None = _knob(
        "Latency target (ms) of the adaptive batching policy.", "100", flag="--max-latency-ms", minimum=1
    )
    policy: str | None = _knob(
        "Batching policy: size-or-timeout, adaptive, or one a plugin adds.", "size-or-timeout",
        flag="--batch-policy",
    )

    @classmethod
    def from_knobs(cls, knobs: dict[str, Any], *, where: str) -> BatchSettings:
        """Settings from decorator keyword arguments; an unknown name is a TypeError listing the knobs."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise TypeError(f"{where} got unknown keyword argument {unknown[0]!r}; batching knobs: "
                            + ", ".join(sorted(known)))
        return cls(**knobs)

    def opted_in(self) -> bool:
        """True when batching was asked for explicitly (``batch=True`` or any knob)."""
        if self.batch is not None:
            return self.batch
        return any(getattr(self, f.name) is not None for f in fields(self) if f.name != "batch")

    def merged_over(self, base: BatchSettings) -> BatchSettings:
        """These settings, with unset values taken from ``base``."""
        return BatchSettings(
            **{
                f.name: mine if (mine := getattr(self, f.name)) is not None else getattr(base, f.name)
                for f in fields(self)
            }
        )


@dataclass
class ServeSettings:
    """Everything ``blazerpc serve`` can be told; plugins read ``extra`` for their options."""

    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 1
    grace_period: float = 10.0
    max_workers: int | None = None
    #: Calls of one sync model that may use the thread pool at once (None: all but two threads).
    max_model_threads: int | None = None
    #: Sync functions consistently faster than this run inline on the loop (0: never; None:
    #: 100, or twice a thread hop's measured cost where that is more, up to 1,000).
    inline_budget_us: float | None = None
    batching: BatchSettings = field(default_factory=BatchSettings)
    metrics_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_message_mb: float = 64.0
    hide_error_details: bool = False
    #: Send a model exception's whole text (tracebacks and paths included), not just its first line.
    full_error_details: bool = False
    log_format: str = "text"
    disabled_plugins: tuple[str, ...] = ()
    #: ``--name``: the model (and rpc) name for a model-file TARGET a plugin loads; None: the file name.
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Connection limits (blazerpc_core.server.wire.limits; docs/security.md, "Connection limits").
    #: Open connections at most; None: three quarters of the open-file limit, at most 10,000.
    max_connections: int | None = None
    #: Seconds from accept to a finished TLS handshake and HTTP/2 preface.
    handshake_timeout: float = 10.0
    #: Seconds without an open stream before a connection gets GOAWAY and is closed (0: never).
    idle_timeout: float = 300.0
    #: Seconds from a unary or server-streaming call's headers to its whole request (0: no limit).
    first_message_timeout: float = 30.0
    #: Request-message megabytes being received at once, over all connections.
    max_inflight_mb: float = 256.0
    #: HTTP/2 streams (calls) one connection may have open; more are refused.
    max_concurrent_streams: int = 100
    #: Client stream resets a connection may average per second before GOAWAY ENHANCE_YOUR_CALM.
    max_resets_per_second: float = 100.0
    #: Seconds to keep accepting calls after SIGTERM (health already NOT_SERVING), so proxies notice first.
    drain_delay: float = 0.0
    #: ``fail``: a model that cannot load stops the start; ``skip``: serve the others without it.
    on_load_error: str = "fail"
    #: ``none``: the served models are fixed; ``explicit``: the management service may change them;
    #: ``poll``: also follow the model repository's files.
    model_control: str = "none"
    #: A directory of model sources (``.py`` files, model files, SavedModel directories).
    model_repository: str | None = None
    #: Seconds between two looks at the repository (``--model-control poll``).
    poll_interval: float = 2.0
    #: ``gzip``: compress responses for clients that accept it; ``identity``: only when the request was.
    compression: str = "identity"
    #: ``--schema-lock``: the lock file whose field numbers are kept (docs/schema.md); None: a model
    #: package's shipped lock, or none.
    schema_lock: str | None = None
    #: ``--allow-breaking``: serve a schema that breaks the lock's clients (each change is logged).
    allow_breaking: bool = False

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)
