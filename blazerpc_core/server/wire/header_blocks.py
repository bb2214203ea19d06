"""HPACK header blocks: a connection's repeated blocks are coded once, not on every call.

A gRPC client sends nearly the same request headers on every call (method, path,
content type, user agent), and once they are in the connection's dynamic table each is a
one- or two-byte index: the block is the same bytes call after call. The server's
response headers and ``grpc-status: 0`` trailers are the same on every call too. hpack
still decodes and encodes each block field by field: about 25 us per request block and
7 us per response block on the server's loop, as much as raw grpclib pays.

A block's coding depends only on its contents and on the connection's header table, so
:class:`WireDecoder` and :class:`WireEncoder` remember the blocks whose coding left the
table as it was, together with a count of the table's changes, and reuse the result
while the count (and the limits a decode is checked against) still match. A block that
adds to the table, resizes it or fails is coded by hpack every time, as before; so is a
long one. The memos are small and per connection, and are emptied when full, so a
client cycling through many distinct blocks costs a failed lookup per block and bounded
memory.

:func:`quiet_hpack` removes hpack's other per-field cost, its debug logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack import hpack as hpack_hpack
from hpack import table as hpack_table
from hpack.table import HeaderTable

#: Blocks remembered per connection and direction; the memo is emptied when it is full.
MEMO_BLOCKS = 16
#: Longest request block remembered, in bytes: a warmed-up gRPC request block is 15-40.
MEMO_BLOCK_BYTES = 128


class _Quiet:
    """A logger that drops debug records without even asking whether it should."""

    def debug(self, *args: object, **kwargs: object) -> None:
        return None


def quiet_hpack() -> None:
    """hpack logs at DEBUG ~30 times per call (every integer it encodes or decodes); unless DEBUG
    logging is on for it, point its module loggers at a stub that skips even the level check."""
    if logging.getLogger("hpack").isEnabledFor(logging.DEBUG):
        return
    for module in (hpack_hpack, hpack_table):
        setattr(module, "log", _Quiet())  # noqa: B010 (mypy does not know the module has a log)


class CountedTable(HeaderTable):
    """hpack's header table, counting its changes: a block coded at one count codes the same way while it holds."""

    def __init__(self) -> None:
        self.changes = 0
        super().__init__()

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class WireDecoder(Decoder):
    """An hpack decoder that reuses the headers of a request block it decoded before; see the module docstring."""

    header_table: CountedTable

    def __init__(self) -> None:
        super().__init__()
        self.header_table = CountedTable()
        #: Block and ``raw`` → (table changes, allowed table size, list size limit, headers).
        self._memo: dict[tuple[bytes, bool], tuple[int, int, int, list[HeaderTuple]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        table = self.header_table
        if type(data) is not bytes or len(data) > MEMO_BLOCK_BYTES:
            return super().decode(data, raw)
        key = (data, raw)
        seen = self._memo.get(key)
        if seen is not None and seen[:3] == (table.changes, self.max_allowed_table_size, self.max_header_list_size):
            return list(seen[3])
        changes = table.changes
        headers = list(super().decode(data, raw))
        if table.changes == changes:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = (changes, self.max_allowed_table_size, self.max_header_list_size, headers)
            return list(headers)
        return headers


class WireEncoder(Encoder):
    """An hpack encoder that reuses the bytes of a response block it encoded before.

    Never-indexed values (a request id) at the end of a block are coded on every call,
    after the remembered bytes of the rest (``grpc-status: 0``), and without Huffman
    coding: such a value is new on every call, so it is a literal each time, and
    Huffman-coding a 15-character id cost 4.6 us of the 9.4 us it took to encode a
    call's trailers and saved 4 bytes. A never-indexed value before others makes the
    whole block go through hpack without Huffman coding.
    """

    header_table: CountedTable

    def __init__(self) -> None:
        super().__init__()
        self.header_table = CountedTable()
        #: ``huffman`` and the headers → (table changes, the encoded block).
        self._memo: dict[tuple[Any, ...], tuple[int, bytes]] = {}

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        block = list(headers)  # h2 passes a generator
        unique = [type(header) is NeverIndexedHeaderTuple for header in block]
        if True not in unique:
            return self._remembered(block, huffman)
        first = unique.index(True)
        if False in unique[first:]:
            return super().encode(block, False)
        return self._remembered(block[:first], huffman) + b"".join(
            self.add((_bytes(name), _bytes(value)), True, False) for name, value in block[first:]
        )

    def _remembered(self, block: list[Any], huffman: bool) -> bytes:
        """``block`` (no never-indexed values in it) coded by hpack, or as hpack coded it last time."""
        table = self.header_table
        key = (huffman, *block)
        seen = self._memo.get(key)
        if seen is not None and seen[0] == table.changes:  # a resize counts as a change
            return seen[1]
        changes, resized = table.changes, table.resized
        data = super().encode(block, huffman)
        if table.changes == changes and not resized:
            if len(self._memo) >= MEMO_BLOCKS:
                self._memo.clear()
            self._memo[key] = (changes, data)
        return data


def _bytes(text: object) -> bytes:
    return text if isinstance(text, bytes) else str(text).encode("utf-8")
