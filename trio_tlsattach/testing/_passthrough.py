"""A layer that adds nothing: the reference for how a layer is written, and a stack test aid.

Theory of operation
-------------------
``PassThroughLayer`` attaches to any byte stream and forwards every call to the stream below
through its underscore methods (the owner's way in), checkpointing once per public call.
Its ``detach`` returns the stream below untouched: there is no protocol to shut down and nothing
is ever read ahead, so nothing is pushed back.
"""

from __future__ import annotations

from typing import Any, Final, final

import trio

from .._base import AttachedMixin, ByteStream, Kind
from .._deadline import FOREVER
from .._transports import begin_attach

__all__ = ["PassThroughLayer", "PassThroughStream"]


@final
class PassThroughStream(AttachedMixin, ByteStream):
    """The attached pass-through layer: every byte goes straight to the stream below."""

    _below: ByteStream

    def __init__(self, below: ByteStream) -> None:
        super().__init__()
        self._bind(below)

    def label(self) -> str:
        return "pass"

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        if self._pushback:
            await trio.lowlevel.checkpoint()
            return self._take_pushback(max_bytes or len(self._pushback))
        return await self._below._receive_some(max_bytes, deadline)

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        if self._pushback:
            await trio.lowlevel.checkpoint()
            return self._take_pushback_into(memoryview(buffer).cast("B"))
        return await self._below._receive_into(buffer, deadline, checkpoint)

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        await self._below._send_all(data, deadline, checkpoint)

    async def _wait_send_all_might_not_block(self) -> None:
        await self._below._wait_send_all_might_not_block()

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        await self._below._send_eof(deadline)

    async def _detach_protocol(self, deadline: float) -> bytes:
        await trio.lowlevel.checkpoint()
        return bytes(self._pushback)

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """Give the stream below back, as it is."""
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below


@final
class PassThroughLayer:
    """Recipe for :class:`PassThroughStream`: ``await stack.push(PassThroughLayer())``."""

    below_kind: Final = Kind.BYTES

    async def attach(self, stream: Any, deadline: float = FOREVER) -> PassThroughStream:
        """Attach to ``stream`` (a byte stream; ProtocolMismatch otherwise)."""
        below = await begin_attach(stream, Kind.BYTES, "pass")
        assert isinstance(below, ByteStream)
        await trio.lowlevel.checkpoint()
        return PassThroughStream(below)
