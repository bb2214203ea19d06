"""Default plugin ``health`` (essential): ``grpc.health.v1.Health``, Check and Watch.

Keys: ``""`` (the whole server), every hosted service's name, and
``blazerpc.model.<name>`` per model (SERVING while its default version is ready). The
server flips them as it starts, changes models and stops; an unknown key is NOT_FOUND
on Check and SERVICE_UNKNOWN on Watch.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpclib.const
from google.protobuf import descriptor_pool, message_factory
from grpclib.const import Status
from grpclib.server import Stream

from blazerpc_core.markers import hookimpl
from blazerpc_core.method import SERVICE_FULL_NAME
from blazerpc_core.server.status import cap_message
from blazerpc_core.server.system_protos import HEALTH_SERVICE, health_file

if TYPE_CHECKING:
    from blazerpc_core.context import ServerContext

UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = 0, 1, 2, 3


class HealthService:
    """Tracks one status per health key; ``""`` is the whole server."""

    def __init__(self, services: list[str]) -> None:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(health_file())
        self._request = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest"))
        self._response = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse"))
        self._status: dict[str, int] = {name: NOT_SERVING for name in ["", *services]}
        self._changed = asyncio.Event()
        #: Bumped by every change; each open Watch stream records the version it last sent.
        self._version = 0
        self._sent: dict[int, int] = {}

    def _notify(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def set_all(self, status: int) -> None:
        """Flip every key; Watch streams see it at once."""
        for name in self._status:
            self._status[name] = status
        self._notify()

    def set(self, service: str, status: int) -> None:
        """Set one key (added if new)."""
        if self._status.get(service) != status:
            self._status[service] = status
            self._notify()

    def forget(self, service: str) -> None:
        if self._status.pop(service, None) is not None:
            self._notify()

    async def delivered(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every Watch stream has sent the latest status.

        Shutdown calls this after NOT_SERVING so watchers hear it before connections close.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while any(v < self._version for v in self._sent.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.005)

    def status(self, service: str) -> int | None:
        return self._status.get(service)

    async def check(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        service = request.service if request else ""
        status = self._status.get(service)
        if status is None:
            await stream.send_trailing_metadata(
                status=Status.NOT_FOUND, status_message=cap_message(f"unknown service {service!r}")
            )
            return
        await stream.send_message(self._response(status=status))

    async def watch(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        service = request.service if request else ""
        last = None
        key = id(stream)
        self._sent[key] = -1
        try:
            while True:
                changed, version = self._changed, self._version
                status = self._status.get(service, SERVICE_UNKNOWN)
                if status != last:
                    await stream.send_message(self._response(status=status))
                    last = status
                self._sent[key] = version
                await changed.wait()
        finally:
            del self._sent[key]

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            f"/{HEALTH_SERVICE}/Check": grpclib.const.Handler(
                self.check, grpclib.const.Cardinality.UNARY_UNARY, self._request, self._response),
            f"/{HEALTH_SERVICE}/Watch": grpclib.const.Handler(
                self.watch, grpclib.const.Cardinality.UNARY_STREAM, self._request, self._response),
        }


@hookimpl(trylast=True)
def blazerpc_services(context: ServerContext) -> list[Any]:
    """The health service, registered on the context so the server can flip it."""
    health = HealthService([SERVICE_FULL_NAME, HEALTH_SERVICE])
    context.health = health
    context.descriptors.add_file(health_file())
    return [health]
