"""The peers' servers for ``benchmarks/peer_scenarios.py``: each runs in its own virtualenv and serves
``benchmarks/model.py``'s models through the Open Inference Protocol (so nothing here may import
grpclib or blazerpc_core)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """An unused loopback port, for the peer's HTTP and metrics listeners nobody calls."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
