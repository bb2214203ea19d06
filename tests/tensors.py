"""``to_proto``, the old name of :func:`blazerpc_core.testing.tensor_proto`.

Only tests/test_streaming.py still imports it (that file is being edited in a separate
change). Once it imports ``tensor_proto`` from ``blazerpc_core.testing``, delete this module.
"""

from __future__ import annotations

from blazerpc_core.testing import tensor_proto as to_proto

__all__ = ["to_proto"]
