"""Server settings: one typed object built from the command line, env vars or code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchSettings:
    """Batching knobs; None means "not set here", so model > app > server precedence works."""

    batch: bool | None = None
    max_batch_size: int | None = None
    batch_timeout_ms: float | None = None
    max_queue_size: int | None = None
    max_concurrent_batches: int | None = None
    max_latency_ms: float | None = None
    policy: str | None = None

    def opted_in(self) -> bool:
        """True when batching was asked for explicitly (``batch=True`` or any knob)."""
        if self.batch is not None:
            return self.batch
        return any(
            v is not None
            for v in (
                self.max_batch_size,
                self.batch_timeout_ms,
                self.max_queue_size,
                self.max_concurrent_batches,
                self.max_latency_ms,
                self.policy,
            )
        )

    def merged_over(self, base: BatchSettings) -> BatchSettings:
        """These settings, with unset values taken from ``base``."""
        return BatchSettings(
            **{
                name: mine if mine is not None else getattr(base, name)
                for name, mine in vars(self).items()
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
    #: Sync functions consistently faster than this run inline on the loop (0: never).
    inline_budget_us: float = 100.0
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

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)
