"""The term layer: a final message marks the end of a message stream.

Theory of operation
-------------------
Sits on any message stream (prefix, suffix...). On the wire it adds nothing but one message,
``final_message``, sent by ``send_eof`` (libdill's ``term_done``); receiving the peer's final
message ends the stream (``receive_message`` returns None, ``async for`` stops). ``detach``
does both (sends its final message if not yet sent, reads until the peer's) and hands back the
message stream underneath: messages that arrive after the peer's final message stay there, in
order. Application messages that arrived before the peer's final message and were not read
are kept in :attr:`TermStream.unread_messages` (as TLS keeps ``unread_data``). The states are
the sans-IO :class:`~trio_tlsattach._cores.TermCore`'s.
"""

from __future__ import annotations

from typing import Any, Final, final

import trio

from ._base import AttachedMixin, ConflictDetector, Kind, MessageStream
from ._cores import END_OF_STREAM, TermCore
from ._cores._common import BytesLike
from ._deadline import FOREVER, check_deadline
from ._errors import NotSupported
from ._transports import begin_attach

__all__ = ["TermLayer", "TermStream", "term_attach", "term_detach", "term_done"]


@final
class TermStream(AttachedMixin, MessageStream):
    """A message stream whose end is a final message (what ``TermLayer.attach`` returns).

    ::

        msgs = await TermLayer(b"BYE").attach(prefix)
        await msgs.send_message(b"last words")
        await msgs.send_eof()                  # sends b"BYE"; the peer's iteration stops
        async for message in msgs: ...         # until the peer's b"BYE"
        prefix = await msgs.detach()           # the message stream below, still usable
    """

    __slots__ = ("_core", "_receive_conflict", "_send_conflict", "unread_messages")
    _below: MessageStream

    def __init__(self, below: MessageStream, core: TermCore) -> None:
        super().__init__()
        self._core = core
        self._bind(below)
        self.unread_messages: list[bytes] = []
        """Messages that arrived before the peer's final message and were unread at detach."""
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )

    def label(self) -> str:
        """``term``: this layer's part of a stack's repr."""
        return "term"

    @property
    def final_message(self) -> bytes:
        """The message that ends each direction."""
        return self._core.final_message

    async def _send_message(self, data: Any, deadline: float = FOREVER) -> None:
        with self._send_conflict:
            await self._below._send_message(self._core.encode(data), deadline)

    async def _receive_next(self, deadline: float = FOREVER) -> bytes | None:
        with self._receive_conflict:
            if self._core.peer_done:
                await trio.lowlevel.checkpoint()
                return None
            message = await self._below._receive_message(deadline)
            if message is None:
                self._core.receive_eof()  # ConnectionBroken: ended without the final message
                return None
            result = self._core.receive(message)
            return None if result is END_OF_STREAM else result

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        with self._send_conflict:
            if self._core.local_done:
                await trio.lowlevel.checkpoint()
                return
            await self._below._send_message(self._core.send_done(), deadline)

    async def detach(self, deadline: float = FOREVER) -> MessageStream:
        """Send the final message, read until the peer's, return the message stream below.

        Messages after the peer's final message are still in the stream below, in order;
        unread ones before it are kept in :attr:`unread_messages`. On failure (deadline,
        cancel, the stream ending without the final message) the whole stack is closed::

            prefix = await msgs.detach(deadline=after(5))
            await prefix.send_message(b"framed, but no longer terminated")
        """
        below = await self._detach_handle(deadline)
        assert isinstance(below, MessageStream)
        return below

    async def _detach_protocol(self, deadline: float) -> list[bytes]:
        checked = check_deadline(deadline)
        await self._send_eof(checked)
        unread = list(self._pushback_messages)
        self._pushback_messages.clear()
        while (message := await self._receive_next(checked)) is not None:
            unread.append(message)
        self.unread_messages = unread
        return []


@final
class TermLayer:
    """Ends a message stream with ``final_message`` (libdill's term protocol): the recipe.

    ``final_message`` is bytes-like, at most 32 KiB (EINVAL otherwise); it goes on top of any
    message layer (a byte stream is :class:`ProtocolMismatch`)::

        msgs = await stack.push(TermLayer(b"BYE"))
        await msgs.send_eof()                          # sends b"BYE"
    """

    __slots__ = ("_final",)
    below_kind: Final = Kind.MESSAGES

    def __init__(self, final_message: BytesLike) -> None:
        self._final = TermCore(final_message).final_message  # EINVAL now

    def __repr__(self) -> str:
        return f"TermLayer({self._final!r})"

    @property
    def final_message(self) -> bytes:
        """The message that ends each direction of the stream."""
        return self._final

    async def attach(self, stream: Any, deadline: float = FOREVER) -> TermStream:
        """Attach to a message stream; ProtocolMismatch (stream closed) on a byte stream."""
        check_deadline(deadline)  # EINVAL before the stream is touched
        below = await begin_attach(stream, Kind.MESSAGES, "term")
        assert isinstance(below, MessageStream)
        await trio.lowlevel.checkpoint()
        return TermStream(below, TermCore(self._final))


def _term(s: object) -> TermStream:
    if not isinstance(s, TermStream):
        raise NotSupported(f"not a term layer: {type(s).__name__}")
    return s


async def term_attach(s: Any, buf: BytesLike) -> TermStream:
    """libdill's ``term_attach(s, buf, len)``.

    >>> msgs = await term_attach(await prefix_attach(tcp, 4, PREFIX_BIG_ENDIAN), b"END")
    """
    return await TermLayer(buf).attach(s)


async def term_done(s: TermStream, deadline: float = FOREVER) -> None:
    """libdill's ``term_done``: send the final message (later sends are EPIPE)."""
    await _term(s).send_eof(deadline)


async def term_detach(s: TermStream, deadline: float = FOREVER) -> MessageStream:
    """libdill's ``term_detach``: final messages both ways, the message stream below back."""
    return await _term(s).detach(deadline)
