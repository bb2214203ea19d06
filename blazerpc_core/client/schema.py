"""What a server serves, learnt through server reflection: its models, their rpcs and messages.

The inference service's file descriptors are fetched with ``grpc.reflection.v1`` (or
``v1alpha`` from servers that only have that), loaded into a descriptor pool private to
one :class:`Schema`, and read with the README's naming rules: model ``text-sentiment`` is
served by ``PredictTextSentiment``, and a model with several versions also by
``PredictTextSentimentV1``, ``PredictTextSentimentV2``…
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline

from blazerpc_core.client.convert import Codecs, MessageCodec
from blazerpc_core.client.errors import CallError
from blazerpc_core.client.protocols import REFLECTION_V1, REFLECTION_V1ALPHA, protocols

SERVICE = "blazerpc.InferenceService"
PREFIX = "Predict"
_CARDINALITIES = {(c.client_streaming, c.server_streaming): c for c in Cardinality}
SHAPES = {
    (False, False): "unary", (False, True): "server-streaming",
    (True, False): "client-streaming", (True, True): "bidi-streaming",
}


def pascal(name: str) -> str:
    """``text-sentiment`` → ``TextSentiment`` (README: split on non-alphanumerics, capitalise each part)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def version_suffix(version: str) -> str:
    """``2.1`` → ``V2_1``, the suffix of a version's own rpc."""
    return "V" + re.sub(r"[^A-Za-z0-9]+", "_", version)


def model_name(pascal_name: str) -> str:
    """``TextSentiment`` → ``text-sentiment``: a name that maps back to the same rpc."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", pascal_name).lower()


def _key(name: str) -> str:
    """Spelling-insensitive form of a model name or Pascal name, for a forgiving lookup."""
    return re.sub(r"[^A-Za-z0-9]+", "", name).lower()


@dataclass(frozen=True)
class FieldInfo:
    """One input or output field: name, proto-like type, whether a call must give it.

    ``streamed`` marks the parameter of a client-streaming model, given as an iterable of
    items; ``values`` lists an enum's member names.
    """

    name: str
    type: str
    required: bool = True
    streamed: bool = False
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    """A model as reflection shows it, one per rpc.

    ``version`` is None for the rpc that serves the model's default version
    (``Predict<Pascal>``) and the version for a version's own rpc; ``versions`` lists the
    versions that have their own rpc. ``shape`` is ``unary``, ``server-streaming``,
    ``client-streaming`` or ``bidi-streaming``. Reflection carries rpc names, not model
    names, so ``name`` is the rpc's Pascal name in kebab case: it calls the same model,
    though the model may have been registered as ``my_model`` rather than ``my-model``.
    """

    name: str
    version: str | None
    rpc: str
    shape: str
    inputs: tuple[FieldInfo, ...]
    outputs: tuple[FieldInfo, ...]
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Method:
    """Everything needed to make one rpc's calls."""

    info: ModelInfo
    path: str
    cardinality: Cardinality
    request: MessageCodec
    response: MessageCodec
    #: Client streams: the request field that carries one item per message.
    stream_field: str | None
    #: The one output field whose value is the result; None when outputs come back as a dict.
    output_field: str | None

    @property
    def client_streaming(self) -> bool:
        return bool(self.cardinality.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.cardinality.server_streaming)


def _fields(codec: MessageCodec, streamed: str | None) -> tuple[FieldInfo, ...]:
    return tuple(
        FieldInfo(f.name, f.type, f.required, f.name == streamed, f.enum_labels) for f in codec.fields.values()
    )


class Schema:
    """The inference service of one server, with codecs for its messages, in a private pool."""

    def __init__(self, files: Sequence[bytes]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        _add_in_order(self.pool, [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files])
        service = self.pool.FindServiceByName(SERVICE)
        codecs = Codecs()
        descriptors: list[MethodDescriptor] = list(service.methods)
        names = {m.name for m in descriptors}
        versions = _versions(names)
        self.methods: dict[str, Method] = {}
        for method in descriptors:
            request = codecs.message(method.input_type)
            response = codecs.message(method.output_type)
            base, version = versions.get(method.name, (method.name, None))
            cardinality = _CARDINALITIES[bool(method.client_streaming), bool(method.server_streaming)]
            fields = list(request.fields)
            stream_field = fields[0] if cardinality.client_streaming and len(fields) == 1 else None
            outputs = list(response.fields)
            info = ModelInfo(
                name=model_name(base.removeprefix(PREFIX)) if base.startswith(PREFIX) else base,
                version=version,
                rpc=method.name,
                shape=SHAPES[cardinality.client_streaming, cardinality.server_streaming],
                inputs=_fields(request, stream_field),
                outputs=_fields(response, None),
                versions=tuple(v for n, (b, v) in sorted(versions.items()) if b == method.name and v),
            )
            self.methods[method.name] = Method(
                info=info, path=f"/{SERVICE}/{method.name}", cardinality=cardinality,
                request=request, response=response, stream_field=stream_field,
                output_field=outputs[0] if len(outputs) == 1 else None,
            )
        self._found: dict[tuple[str, str | int | None], Method] = {}
        self._by_key: dict[str, list[str]] = {}
        for rpc in self.methods:
            self._by_key.setdefault(_key(rpc), []).append(rpc)

    def models(self) -> list[ModelInfo]:
        return [m.info for m in self.methods.values()]

    def find(self, model: str, version: str | int | None = None) -> Method | None:
        """The method serving ``model`` (at ``version``), or None.

        An exact Pascal match wins; otherwise the name matches regardless of case and
        separators, when that picks one rpc (``http-thing`` finds ``PredictHTTPThing``).
        """
        method = self._found.get((model, version))
        if method is not None:
            return method
        rpc = PREFIX + pascal(model) + (version_suffix(str(version)) if version is not None else "")
        method = self.methods.get(rpc)
        if method is None:
            loose = self._by_key.get(_key(rpc), [])
            method = self.methods[loose[0]] if len(loose) == 1 else None
        if method is not None and len(self._found) < 10_000:
            self._found[model, version] = method
        return method

    def describe_missing(self, model: str, version: str | int | None) -> str:
        """Why :meth:`find` found nothing, with what the server does serve."""
        base = self.find(model)
        if version is not None and base is not None:
            served = ", ".join(base.info.versions) or "none besides the default"
            return f"model {model!r} has no version {str(version)!r} on its own rpc (versions: {served})"
        names = sorted({m.info.name for m in self.methods.values()})
        return f"no model {model!r} on this server; it serves {', '.join(names) or 'no models'}"


def _versions(names: set[str]) -> dict[str, tuple[str, str]]:
    """``{rpc: (default rpc, version)}`` for rpcs that look like a version's own rpc.

    ``PredictScaleV1`` is version 1 of ``scale`` when ``PredictScale`` exists and at least
    two rpcs carry a version suffix of it, as the server makes them only for models with
    several versions. (A lone ``PredictScaleV1`` beside ``PredictScale`` is a model named
    ``scale-v1``; a model is callable by its rpc's name either way.)
    """
    candidates: dict[str, tuple[str, str]] = {}
    for name in names:
        for match in re.finditer("V", name):
            base, suffix = name[: match.start()], name[match.end():]
            if (base in names and base != name and re.fullmatch(r"[A-Za-z0-9_]+", suffix)
                    and (name not in candidates or len(base) > len(candidates[name][0]))):
                candidates[name] = (base, suffix)
    counts: dict[str, int] = {}
    for base, _ in candidates.values():
        counts[base] = counts.get(base, 0) + 1
    return {name: (base, version) for name, (base, version) in candidates.items() if counts[base] >= 2}


def _add_in_order(pool: descriptor_pool.DescriptorPool, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    """Add files dependencies first, as a pool requires."""
    pending = {f.name: f for f in files}
    added: set[str] = set()

    def add(name: str, path: tuple[str, ...]) -> None:
        if name in added or name not in pending or name in path:
            return
        file = pending[name]
        for dependency in file.dependency:
            add(dependency, (*path, name))
        pool.AddSerializedFile(file.SerializeToString())
        added.add(name)

    for name in list(pending):
        add(name, ())


async def fetch_files(
    channel: Channel, *, metadata: Sequence[tuple[str, str]], deadline: Deadline, address: str
) -> list[bytes]:
    """Serialized file descriptors of the inference service and its dependencies.

    Asks ``grpc.reflection.v1`` first and falls back to ``v1alpha`` when the server does
    not know it.
    """
    last: GRPCError | None = None
    for service in (REFLECTION_V1, REFLECTION_V1ALPHA):
        try:
            return await _fetch(channel, service, metadata=metadata, deadline=deadline, address=address)
        except GRPCError as exc:
            if exc.status is not Status.UNIMPLEMENTED:
                raise
            last = exc
    assert last is not None
    raise CallError(Status.UNIMPLEMENTED, f"the server does not offer server reflection ({last.message})",
                    address=address)


async def _fetch(
    channel: Channel, service: str, *, metadata: Sequence[tuple[str, str]], deadline: Deadline, address: str
) -> list[bytes]:
    request_cls, response_cls = protocols().reflection[service]
    path = f"/{service}/ServerReflectionInfo"
    files: dict[str, bytes] = {}
    async with channel.request(path, Cardinality.STREAM_STREAM, request_cls, response_cls,
                               deadline=deadline, metadata=metadata) as stream:

        async def ask(**question: str) -> Any:
            await stream.send_message(request_cls(**question))
            answer = await stream.recv_message()
            if answer is None:
                raise CallError(Status.UNAVAILABLE, "server reflection ended the stream early", address=address)
            if answer.WhichOneof("message_response") == "error_response":
                error = answer.error_response
                raise CallError(Status(error.error_code) if error.error_code in _STATUSES else Status.UNKNOWN,
                                f"server reflection: {error.error_message}", address=address)
            return answer

        listed = await ask(list_services="")
        services = [s.name for s in listed.list_services_response.service]
        if SERVICE not in services:
            raise CallError(Status.UNIMPLEMENTED,
                            f"the server does not serve {SERVICE} (it serves {', '.join(services) or 'nothing'})",
                            address=address)
        todo, asked = [("file_containing_symbol", SERVICE)], set()
        while todo:
            how, what = todo.pop()
            if what in asked or what in files:
                continue
            asked.add(what)
            answer = await ask(**{how: what})
            for raw in answer.file_descriptor_response.file_descriptor_proto:
                file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files.setdefault(file.name, raw)
                todo.extend(("file_by_filename", d) for d in file.dependency)
        await stream.end()
    return list(files.values())


_STATUSES = {s.value for s in Status}
