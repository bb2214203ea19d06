"""``AsyncClient``: call a blazerpc server's models by name, with Python values in and out.

The client learns the server's models through reflection on first use, balances calls
over its addresses, and retries only what the server did not process (see
:mod:`blazerpc_core.client.retry`). One instance belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline

from blazerpc_core.client.endpoints import (
    TRANSPORT_ERRORS,
    Balancer,
    Endpoint,
    HealthMonitor,
    LimitedCodec,
    MessageTooLarge,
    check_health,
    tls_context,
    watch_health,
)
from blazerpc_core.client.errors import REQUEST_ID, CallError
from blazerpc_core.client.protocols import STATUS_NAMES
from blazerpc_core.client.retry import RetryBudget, RetryPolicy
from blazerpc_core.client.retry import retryable as retryable_status
from blazerpc_core.client.schema import Method, ModelInfo, Schema, fetch_files
from blazerpc_core.client.streams import Requests, SourceError, as_async_iterator, discard, receive, send_all

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
DEFAULT_TIMEOUT = 30.0
#: A model name the schema lacks triggers a fresh discovery at most this often (it may have been loaded since).
REFRESH_INTERVAL = 1.0


class AsyncClient:
    """Calls the models of one or more blazerpc servers (``"host:port"`` or a list of them).

    ``timeout`` is every call's deadline unless a call gives its own. ``token`` and
    ``api_key`` are sent as ``authorization: Bearer …`` and ``x-api-key``; ``metadata`` adds
    headers to every call. TLS is on with ``tls=True`` (system trust store), a ``ca_file``,
    or an ``ssl.SSLContext`` (it must offer ALPN ``h2``); ``cert_file``/``key_file`` present
    a client certificate (mTLS); ``server_name`` overrides the name checked in the
    server's certificate. ``balance`` is ``least_loaded`` or ``round_robin``;
    ``health_checks`` (default: when there are several addresses) watches each address's
    health service. ``max_send_mb``/``max_receive_mb`` bound message sizes (None: no limit).

    >>> async with AsyncClient("127.0.0.1:50051") as client:  # doctest: +SKIP
    ...     await client.call("add", a=1.0, b=2.0)
    3.0
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: str | None = None,
        api_key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tls: bool | ssl.SSLContext = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        retry: RetryPolicy | None = None,
        balance: str = "least_loaded",
        health_checks: bool | None = None,
        max_send_mb: float | None = 64.0,
        max_receive_mb: float | None = 64.0,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.timeout = float(timeout)
        headers = {k.lower(): v for k, v in (metadata or {}).items()}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if api_key is not None:
            headers["x-api-key"] = api_key
        self._metadata: Metadata = tuple(headers.items())
        if isinstance(tls, ssl.SSLContext):
            context: ssl.SSLContext | None = tls
        elif tls or ca_file or cert_file:
            context = tls_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        else:
            context = None
        codec = LimitedCodec(_bytes(max_send_mb), _bytes(max_receive_mb))
        self._endpoints = [Endpoint(a, ssl_context=context, server_name=server_name, codec=codec) for a in addresses]
        self._balancer = Balancer(self._endpoints, balance)
        watch = len(self._endpoints) > 1 if health_checks is None else health_checks
        self._monitor = HealthMonitor(self._endpoints, self._metadata) if watch else None
        self.retry = retry or RetryPolicy()
        self._budget = RetryBudget(self.retry)
        self._schema: Schema | None = None
        self._schema_lock: asyncio.Lock | None = None
        self._refreshed_at = 0.0
        self._started = False
        self._closed = False

    @property
    def addresses(self) -> list[str]:
        return [e.address for e in self._endpoints]

    async def __aenter__(self) -> AsyncClient:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _start(self) -> None:
        if self._closed:
            raise RuntimeError("the client is closed")
        if not self._started:
            self._started = True
            self._schema_lock = asyncio.Lock()
            if self._monitor is not None:
                self._monitor.start()

    async def close(self) -> None:
        """Stop health watches and close every connection; idempotent."""
        self._closed = True
        if self._monitor is not None:
            await self._monitor.stop()
        for endpoint in self._endpoints:
            endpoint.close()

    # --- discovery ----------------------------------------------------------------------

    async def schema(self, *, refresh: bool = False, timeout: float | None = None) -> Schema:
        """The server's inference service as reflection describes it (fetched once, then cached)."""
        self._start()
        assert self._schema_lock is not None
        deadline = self._deadline(timeout)
        if self._schema is not None and not refresh:
            return self._schema
        async with self._schema_lock:
            if self._schema is None or refresh:
                if self._monitor is not None and self._schema is None:
                    await self._monitor.first_reports(min(1.0, self.timeout / 4))

                async def fetch(endpoint: Endpoint, dl: Deadline) -> list[bytes]:
                    return await fetch_files(endpoint.channel, metadata=self._metadata, deadline=dl,
                                             address=endpoint.address)

                self._schema = Schema(await self._unary(fetch, deadline))
                self._refreshed_at = time.monotonic()
        return self._schema

    async def models(self, *, refresh: bool = False) -> list[ModelInfo]:
        """Every rpc of the inference service: model name, version, rpc, streaming shape, inputs, outputs."""
        return (await self.schema(refresh=refresh)).models()

    async def method(self, model: str, version: str | int | None = None, *, timeout: float | None = None) -> Method:
        """The rpc serving ``model`` (at ``version``); CallError NOT_FOUND when the server has none."""
        schema = await self.schema(timeout=timeout)
        found = schema.find(model, version)
        if found is None and time.monotonic() - self._refreshed_at >= REFRESH_INTERVAL:
            schema = await self.schema(refresh=True, timeout=timeout)
            found = schema.find(model, version)
        if found is None:
            raise CallError(Status.NOT_FOUND, schema.describe_missing(model, version))
        return found

    # --- calls --------------------------------------------------------------------------

    async def call(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        version: str | int | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call a unary or client-streaming model; returns its result (a dict when it has several outputs).

        Inputs are keyword arguments, or a mapping given positionally (for inputs named
        ``version``, ``timeout`` or ``metadata``). A client-streaming model takes its
        streamed input as any iterable or async iterable of items.
        """
        deadline = self._deadline(timeout)
        method = await self.method(model, version, timeout=timeout)
        if method.server_streaming:
            raise TypeError(f"model {model!r} streams its results ({method.info.shape}); use stream()")
        values = merge_inputs(inputs, kwargs)
        headers = self._headers(metadata)
        if not method.client_streaming:
            request = _request(method, values)

            async def attempt(endpoint: Endpoint, dl: Deadline) -> Any:
                stream = endpoint.channel.request(method.path, method.cardinality, method.request.cls,
                                                  method.response.cls, deadline=dl, metadata=headers)
                try:
                    async with stream:
                        await stream.send_message(request, end=True)
                        reply = await stream.recv_message()
                except GRPCError as exc:
                    raise _server_error(exc, stream.trailing_metadata, endpoint.address) from None
                if reply is None:
                    raise CallError(Status.INTERNAL, "the server ended the call with OK but no reply",
                                    address=endpoint.address)
                return reply

            return _result(method, await self._unary(attempt, deadline))
        last = None
        async with contextlib.aclosing(self._streaming(method, values, deadline, headers)) as replies:
            async for reply in replies:
                last = reply
        if last is None:
            raise CallError(Status.INTERNAL, f"{method.info.rpc} ended without a reply")
        return _result(method, last)

    async def stream(
        self,
        model: str,
        inputs: Mapping[str, Any] | None = None,
        /,
        *,
        version: str | int | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[Any, None]:
        """Call a server-streaming or bidirectional model; yields each result as it arrives.

        The deadline covers the whole stream. Leaving the loop early cancels the call.
        """
        deadline = self._deadline(timeout)
        method = await self.method(model, version, timeout=timeout)
        if not method.server_streaming:
            raise TypeError(f"model {model!r} answers once ({method.info.shape}); use call()")
        values = merge_inputs(inputs, kwargs)
        async with contextlib.aclosing(self._streaming(method, values, deadline, self._headers(metadata))) as replies:
            async for reply in replies:
                yield _result(method, reply)

    async def health(self, service: str = "", *, address: str | None = None, timeout: float | None = None) -> str:
        """The health service's status of ``service`` on one address (default: the first), not retried.

        Returns ``SERVING``, ``NOT_SERVING``, ``UNKNOWN`` or ``SERVICE_UNKNOWN``; an unknown
        service raises CallError NOT_FOUND.
        """
        self._start()
        endpoint = self._endpoints[0] if address is None else self._endpoint(address)
        seconds = self.timeout if timeout is None else timeout
        try:
            status = await check_health(endpoint.channel, service, metadata=self._metadata, timeout=seconds)
        except Exception as exc:
            classified = self._classify(exc, endpoint)
            if classified is None:
                raise
            raise classified[0] from None
        return STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else str(status)

    async def watch_health(self, service: str = "", *, address: str | None = None) -> AsyncGenerator[str, None]:
        """Each status the health service sends for ``service`` on one address, until the stream ends.

        Runs without a deadline; wrap it in ``asyncio.timeout`` to bound it. Errors raise CallError.
        """
        self._start()
        endpoint = self._endpoints[0] if address is None else self._endpoint(address)
        try:
            async for status in watch_health(endpoint.channel, service, metadata=self._metadata):
                yield STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else str(status)
        except Exception as exc:
            classified = self._classify(exc, endpoint)
            if classified is None:
                raise
            raise classified[0] from None

    # --- machinery ----------------------------------------------------------------------

    def _endpoint(self, address: str) -> Endpoint:
        for endpoint in self._endpoints:
            if endpoint.address == address:
                return endpoint
        raise ValueError(f"{address!r} is not one of this client's addresses ({', '.join(self.addresses)})")

    def _deadline(self, timeout: float | None) -> float:
        seconds = self.timeout if timeout is None else timeout
        if not seconds > 0:
            raise ValueError(f"timeout must be positive, got {seconds!r}")
        return time.monotonic() + seconds

    def _headers(self, metadata: Mapping[str, str] | None) -> Metadata:
        if not metadata:
            return self._metadata
        return (*self._metadata, *((k.lower(), v) for k, v in metadata.items()))

    async def _unary(self, attempt: Callable[[Endpoint, Deadline], Awaitable[T]], deadline: float) -> T:
        """Run ``attempt`` on a picked address, again on another after a retryable failure."""
        self._start()
        self._budget.call_started()
        tried: list[Endpoint] = []
        while True:
            endpoint = await self._pick(tried, deadline)
            endpoint.inflight += 1
            try:
                result = await attempt(endpoint, Deadline.from_timeout(deadline - time.monotonic()))
            except Exception as exc:
                classified = self._classify(exc, endpoint)
                if classified is None:
                    raise
                error, retryable = classified
            else:
                endpoint.succeeded()
                return result
            finally:
                endpoint.inflight -= 1
            tried.append(endpoint)
            await self._before_retry(error, retryable, len(tried), deadline)

    async def _streaming(
        self, method: Method, values: dict[str, Any], deadline: float, headers: Metadata
    ) -> AsyncGenerator[Any, None]:
        """Replies of a streaming call; retried only while nothing has been received."""
        self._start()
        requests: Requests | None = None
        request = None
        if method.client_streaming:
            field = method.stream_field
            if field is None:
                raise TypeError(f"{method.info.rpc} streams requests but has {len(method.request.fields)} "
                                "fields; this client needs exactly one")
            _check_inputs(method, values)
            codec = method.request
            requests = Requests(
                as_async_iterator(values[field]),
                lambda item: codec.build(codec.encode_values({field: item}, what=method.info.rpc), what="request"),
            )
        else:
            request = _request(method, values)
        self._budget.call_started()
        tried: list[Endpoint] = []
        received = False
        while True:
            endpoint = await self._pick(tried, deadline)
            endpoint.inflight += 1
            stream = endpoint.channel.request(
                method.path, method.cardinality, method.request.cls, method.response.cls,
                deadline=Deadline.from_timeout(deadline - time.monotonic()), metadata=headers,
            )
            sender: asyncio.Future[None] | None = None
            try:
                async with stream:
                    if requests is not None:
                        await stream.send_request()  # headers first: replies are read while items go out
                        sender = asyncio.ensure_future(send_all(stream, requests))
                    else:
                        await stream.send_message(request, end=True)
                    while True:
                        reply = await receive(stream, sender)
                        if reply is None:
                            break
                        if not received:
                            received = True
                            if requests is not None:
                                requests.settle()
                        yield reply
                endpoint.succeeded()
                return
            except SourceError as exc:
                raise exc.error from None
            except GRPCError as exc:
                error: CallError = _server_error(exc, stream.trailing_metadata, endpoint.address)
                retryable = retryable_status(error.status, error.message)
                self._note(error, endpoint)
            except Exception as exc:
                classified = self._classify(exc, endpoint)
                if classified is None:
                    raise
                error, retryable = classified
            finally:
                endpoint.inflight -= 1
                if sender is not None:
                    discard(sender)
            if received or (requests is not None and not requests.replayable):
                raise error
            tried.append(endpoint)
            await self._before_retry(error, retryable, len(tried), deadline)

    async def _pick(self, tried: list[Endpoint], deadline: float) -> Endpoint:
        endpoint = self._balancer.pick(tried)
        wait = endpoint.busy_until - time.monotonic()
        if wait > 0:
            if time.monotonic() + wait >= deadline:
                raise CallError(Status.RESOURCE_EXHAUSTED,
                                f"the server asked for no calls for another {wait * 1000:.0f} ms (retry-after-ms), "
                                "past this call's deadline", address=endpoint.address)
            await asyncio.sleep(wait)
        return endpoint

    async def _before_retry(self, error: CallError, retryable: bool, attempts: int, deadline: float) -> None:
        """Return after the backoff when the call may be tried again; else raise ``error``."""
        if not retryable or attempts >= self.retry.max_attempts:
            raise error
        delay = self.retry.backoff(attempts, error.retry_after)
        if time.monotonic() + delay >= deadline or not self._budget.try_retry():
            raise error
        await asyncio.sleep(delay)

    def _note(self, error: CallError, endpoint: Endpoint) -> None:
        """What a failure says about its address: unavailable for a while, or asking us to wait."""
        if error.status is Status.UNAVAILABLE:
            endpoint.failed()
        retry_after = error.retry_after
        if retry_after:
            endpoint.hold(retry_after)

    def _classify(self, exc: BaseException, endpoint: Endpoint) -> tuple[CallError, bool] | None:
        """A failed attempt as ``(CallError, retryable)``; None for exceptions that are the caller's own."""
        address = endpoint.address
        if isinstance(exc, CallError):
            error, retryable = exc, retryable_status(exc.status, exc.message)
        elif isinstance(exc, GRPCError):
            error = _server_error(exc, None, address)
            retryable = retryable_status(error.status, error.message)
        elif isinstance(exc, MessageTooLarge):
            return CallError(Status.RESOURCE_EXHAUSTED, str(exc), address=address), False
        elif isinstance(exc, TimeoutError):  # grpclib's deadline; before OSError, its base class
            return CallError(Status.DEADLINE_EXCEEDED, "deadline exceeded before the call completed",
                             address=address), False
        elif isinstance(exc, ssl.SSLError):
            endpoint.failed()
            return CallError(Status.UNAVAILABLE, f"TLS failed: {exc}", address=address), False
        elif isinstance(exc, TRANSPORT_ERRORS):
            error = CallError(Status.UNAVAILABLE, f"connection failed: {exc or type(exc).__name__}",
                              address=address)
            retryable = True
        else:
            return None
        self._note(error, endpoint)
        return error, retryable


# --- helpers ----------------------------------------------------------------------------


def _bytes(megabytes: float | None) -> int | None:
    return None if megabytes is None else int(megabytes * 1024 * 1024)


def merge_inputs(inputs: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's inputs from its positional mapping and its keyword arguments, each name given once."""
    if inputs is None:
        return kwargs
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs are keyword arguments or one mapping, not {type(inputs).__name__}")
    both = set(inputs) & set(kwargs)
    if both:
        raise TypeError(f"input(s) {', '.join(sorted(both))} given twice")
    return {**inputs, **kwargs}


def _check_inputs(method: Method, values: Mapping[str, Any]) -> None:
    """Unknown or missing inputs raise TypeError naming the model's inputs, before anything is sent."""
    fields = method.request.fields
    if fields.keys() >= values.keys() and all(values.get(n) is not None for n in method.request.required):
        return  # the common case, checked cheaply
    unknown = [name for name in values if name not in fields]
    missing = [name for name, f in fields.items() if f.required and values.get(name) is None]
    if unknown or missing:
        described = ", ".join(f"{n}: {f.type}" for n, f in fields.items()) or "none"
        problem = (f"got unexpected input(s) {', '.join(map(repr, unknown))}" if unknown
                   else f"missing input(s) {', '.join(map(repr, missing))}")
        raise TypeError(f"{method.info.name} ({method.info.rpc}) {problem}; its inputs are: {described}")


def _request(method: Method, values: Mapping[str, Any]) -> Any:
    _check_inputs(method, values)
    codec = method.request
    return codec.build(codec.encode_values(values, what=method.info.rpc), what=method.info.rpc)


def _result(method: Method, reply: Any) -> Any:
    if method.output_field is not None:
        return method.response.decode_single(reply, method.output_field)
    return method.response.decode_dict(reply)


def _server_error(exc: GRPCError, trailers: Any, address: str) -> CallError:
    pairs = {str(k): str(v) for k, v in (trailers or {}).items() if isinstance(v, str)}
    return CallError(exc.status, exc.message or "", address=address, request_id=pairs.get(REQUEST_ID),
                     trailers=pairs)
