"""A layer that adds nothing: the reference for how a layer is written, and a stack test aid.

Theory of operation
-------------------
``PassThroughLayer`` attaches to any byte stream and forwards every call to the stream below.
It follows the skeleton every layer in this package follows (DESIGN.md, section 5):

* ``PassThroughLayer`` is the recipe; its ``attach`` calls :func:`begin_attach` first, which
  takes ownership of the stream (the old handle then raises ``BadHandle``) and checks its kind
  (a message stream is closed and :class:`ProtocolMismatch` is raised).
* ``PassThroughStream`` is the attached object. Public methods (``send_all``...) come from
  :class:`ByteStream`: they check ownership and call the underscore methods here. Those forward
  to the stream below through *its* underscore methods, which skip the ownership check (this
  layer is the owner) and, with ``checkpoint=False``, skip the schedule point too: this layer
  makes exactly one Trio checkpoint per call of its own (``checkpoint_if_cancelled`` before any
  byte moves, ``cancel_shielded_checkpoint`` after, so a cancellation never loses data).
* Bytes put back in front of this layer with :meth:`unread` are served first and, on detach,
  handed to the stream below (pushback), so detach loses nothing.
* There is no protocol to shut down: ``detach`` hands the stream below back at once;
  ``aclose`` (inherited) closes the whole stack below. No state block is used.

``MessagePassThroughLayer`` is the same for message streams (one message per message): the
reference for a layer that sits on framing, and a way to test stacks of message layers.
"""

from __future__ import annotations

from typing import Any, Final, final

import trio

from .._base import (
    AttachedMixin,
    ByteStream,
    Handle,
    Kind,
    MessageStream,
    as_writable_view,
    check_max_bytes,
    close_shielded,
)
from .._deadline import FOREVER, check_deadline
from .._transports import begin_attach

__all__ = [
    "MessagePassThroughLayer",
    "MessagePassThroughStream",
    "PassThroughLayer",
    "PassThroughStream",
]

DEFAULT_RECEIVE_SIZE: Final = 65536


async def _take_over(stream: Any, deadline: float, kind: Kind, name: str) -> Handle:
    """The first half of both attaches: own ``stream`` (it is closed if anything fails)."""
    below = await begin_attach(stream, kind, name)
    try:
        check_deadline(deadline)
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        await close_shielded(below)
        raise
    return below


@final
class PassThroughStream(AttachedMixin, ByteStream):
    """The attached pass-through layer: every byte goes straight to the stream below.

    Made by :meth:`PassThroughLayer.attach`; ``label()`` is ``"pass"``.
    """

    _below: ByteStream

    def __init__(self, below: ByteStream) -> None:
        super().__init__()
        self._bind(below)

    def label(self) -> str:
        """``"pass"``, this layer's part of a stack's repr."""
        return "pass"

    # --- send side ------------------------------------------------------------------------------

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        check_deadline(deadline)
        if checkpoint:
            await trio.lowlevel.checkpoint_if_cancelled()
        await self._below._send_all(data, deadline, False)
        if checkpoint:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_send_all_might_not_block(self) -> None:
        await self._below._wait_send_all_might_not_block()

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        await self._below._send_eof(deadline)

    async def _send_on_close(self, data: bytes) -> None:
        await self._below._send_on_close(data)

    # --- receive side ---------------------------------------------------------------------------

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        check_deadline(deadline)
        if self._pushback:
            await trio.lowlevel.checkpoint()
            return self._take_pushback(size)
        # The stream below has no checkpoint switch on receive_some: its call is our checkpoint.
        return await self._below._receive_some(size, deadline)

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        view = as_writable_view(buffer)  # EINVAL for read-only, non-contiguous or empty
        check_deadline(deadline)
        if checkpoint:
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._pushback:
            n = self._take_pushback_into(view)
        else:
            n = await self._below._receive_into(view, deadline, False)
        if checkpoint:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return n

    def _receive_nowait(self, view: memoryview) -> int | None:
        # A layer above this one (TLS...) takes what is there without waiting: ours first.
        if self._pushback:
            return self._take_pushback_into(view)
        return self._below._receive_nowait(view)

    async def _wait_receivable(self, deadline: float) -> bool:
        if self._pushback:
            return True
        return await self._below._wait_receivable(deadline)

    # --- detach ---------------------------------------------------------------------------------

    async def _detach_protocol(self, deadline: float) -> bytes:
        check_deadline(deadline)
        await trio.lowlevel.checkpoint()
        leftover = bytes(self._pushback)
        self._pushback.clear()
        return leftover

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """Hand the stream below back, with any bytes unread on this layer in front of it.

        This layer is then dead (``BadHandle``); keep using what is returned.
        """
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below


@final
class PassThroughLayer:
    """Recipe for :class:`PassThroughStream`: ``await stack.push(PassThroughLayer())``.

    Attaches to any byte stream and changes nothing on the wire.
    """

    below_kind: Final = Kind.BYTES

    async def attach(self, stream: Any, deadline: float = FOREVER) -> PassThroughStream:
        """Attach to ``stream`` and return the new top.

        ``stream`` must be a byte stream: a message stream is closed and
        :class:`ProtocolMismatch` (EPROTO) is raised. As in libdill, any other failure
        (a bad ``deadline``, cancellation) closes ``stream`` too; a stream that is closed or
        owned by another layer is :class:`BadHandle` and left alone.
        """
        below = await _take_over(stream, deadline, Kind.BYTES, "pass")
        assert isinstance(below, ByteStream)
        attached = PassThroughStream(below)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return attached


@final
class MessagePassThroughStream(AttachedMixin, MessageStream):
    """The attached message pass-through: every message goes straight to the stream below.

    Made by :meth:`MessagePassThroughLayer.attach`; ``label()`` is ``"mpass"``.
    """

    _below: MessageStream

    def __init__(self, below: MessageStream) -> None:
        super().__init__()
        self._bind(below)

    def label(self) -> str:
        """``"mpass"``, this layer's part of a stack's repr."""
        return "mpass"

    async def _send_message(self, data: Any, deadline: float) -> None:
        await self._below._send_message(data, deadline)

    async def _send_eof(self, deadline: float) -> None:
        await self._below._send_eof(deadline)

    async def _receive_next(self, deadline: float) -> bytes | None:
        return await self._below._receive_message(deadline)

    async def _detach_protocol(self, deadline: float) -> list[bytes]:
        check_deadline(deadline)
        await trio.lowlevel.checkpoint()
        leftover = list(self._pushback_messages)
        self._pushback_messages.clear()
        return leftover

    async def detach(self, deadline: float = FOREVER) -> MessageStream:
        """Hand the stream below back, with messages unread on this layer in front of it."""
        below = await self._detach_handle(deadline)
        assert isinstance(below, MessageStream)
        return below


@final
class MessagePassThroughLayer:
    """Recipe for :class:`MessagePassThroughStream`, for stacks of message layers::

    await stack.push(PrefixLayer(4))
    await stack.push(MessagePassThroughLayer())
    """

    below_kind: Final = Kind.MESSAGES

    async def attach(self, stream: Any, deadline: float = FOREVER) -> MessagePassThroughStream:
        """Attach to the message stream ``stream``; a byte stream is ``ProtocolMismatch``."""
        below = await _take_over(stream, deadline, Kind.MESSAGES, "mpass")
        assert isinstance(below, MessageStream)
        attached = MessagePassThroughStream(below)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return attached
