"""A client for blazerpc servers that needs no ``.proto``: models by name, Python values in and out.

::

    from blazerpc_core.client import Client

    with Client("127.0.0.1:50051", timeout=5.0) as client:
        client.call("add", a=0.1, b=0.2)            # 0.30000000000000004
        for token in client.stream("generate", prompt="hi"):
            print(token)

The server's models are learnt through server reflection. :class:`AsyncClient` is the
asyncio version; :class:`Client` runs one on a private event loop thread. Failed calls
raise :class:`CallError`. See ``docs/client.md``.
"""

from blazerpc_core.client.aio import AsyncClient
from blazerpc_core.client.errors import CallError
from blazerpc_core.client.retry import RetryPolicy
from blazerpc_core.client.schema import FieldInfo, ModelInfo
from blazerpc_core.client.sync import Client

__all__ = ["AsyncClient", "CallError", "Client", "FieldInfo", "ModelInfo", "RetryPolicy"]
