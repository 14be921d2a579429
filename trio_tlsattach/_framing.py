"""The Trio side shared by the byte-framing layers (prefix, suffix): one stream, many cores.

Theory of operation
-------------------
A framing layer turns the byte stream below into a stream of messages. What a message looks
like on the wire is entirely the business of its sans-IO core (``_cores``: a length header for
prefix, a delimiter for suffix), so the Trio side is written once here: :class:`FramedStream`.

* send: ``core.encode(message)`` (EINVAL/EMSGSIZE before a byte is sent), then one
  ``send_all`` below.
* receive: ask the core for the next message; when it needs data, ``receive_into`` a reused
  64 KiB buffer from below and feed the core. An oversized message raises
  :class:`MessageTooLarge` once while the core skips it, so the stream stays usable.
* done (``send_eof``): half-close the byte stream below; framing has no end marker of its own
  (that is what the term layer adds).
* detach: hand the byte stream back with everything read past the last returned message
  pushed back in front of it (messages put back with ``unread_message`` are re-encoded first),
  so nothing is lost. Detaching while the core skips an oversized message is refused with
  :class:`ConnectionBroken` (the bytes there are the rest of a message nobody will read), which,
  like every failed detach, closes the stack.

Per-connection state is the core's buffer and the receive buffer; framing layers take no
caller memory block.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import trio

from ._base import AttachedMixin, ByteStream, ConflictDetector, Kind, MessageStream
from ._cores import END_OF_STREAM, NEED_DATA, EndOfStream, NeedData
from ._cores._common import FrameState
from ._deadline import FOREVER, check_deadline
from ._errors import ConnectionBroken, NotSupported, SendAfterDone
from ._transports import begin_attach

__all__ = ["FramedStream", "FramingCoreLike", "attach_framing", "mrecv", "msend"]

RECEIVE_SIZE: Final = 65536


class FramingCoreLike(Protocol):
    """What FramedStream needs from a byte-framing core."""

    @property
    def state(self) -> FrameState: ...

    @property
    def trailing_data(self) -> bytes: ...

    def encode(self, message: Any) -> bytes: ...

    def feed(self, data: Any) -> None: ...

    def feed_eof(self) -> None: ...

    def next_message(self) -> bytes | NeedData | EndOfStream: ...


class FramedStream(AttachedMixin, MessageStream):
    """A message stream over a byte stream, framed by a sans-IO core.

    What ``PrefixLayer.attach`` and ``SuffixLayer.attach`` return::

        msgs = await PrefixLayer(4).attach(tls)
        await msgs.send_message(b"request")
        reply = await msgs.receive_message(deadline=after(5))
        async for message in msgs: ...
        tls = await msgs.detach()
    """

    _below: ByteStream

    def __init__(self, below: ByteStream, core: FramingCoreLike, name: str) -> None:
        super().__init__()
        self._core = core
        self._name = name
        self._bind(below)
        self._send_done = False
        self._buffer = bytearray(RECEIVE_SIZE)
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )

    def label(self) -> str:
        return self._name

    @property
    def core(self) -> FramingCoreLike:
        """The sans-IO core (read-only use: its ``state``, ``pending``...)."""
        return self._core

    async def _send_message(self, data: Any, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            if self._send_done:
                raise SendAfterDone("send after send_eof()")
            wire = self._core.encode(data)
            await self._below._send_all(wire, checked)

    async def _receive_next(self, deadline: float = FOREVER) -> bytes | None:
        checked = check_deadline(deadline)
        with self._receive_conflict:
            read = False
            while True:
                message = self._core.next_message()
                if message is NEED_DATA:
                    n = await self._below._receive_into(self._buffer, checked)
                    read = True
                    if n:
                        self._core.feed(memoryview(self._buffer)[:n])
                    else:
                        self._core.feed_eof()
                    continue
                if not read:
                    await trio.lowlevel.checkpoint()
                return None if message is END_OF_STREAM else message

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        with self._send_conflict:
            self._send_done = True
            await self._below._send_eof(deadline)

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """Stop framing; return the byte stream below with unread bytes pushed back in front."""
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below

    async def _detach_protocol(self, deadline: float) -> bytes:
        check_deadline(deadline)
        await trio.lowlevel.checkpoint()
        if self._core.state is FrameState.SKIPPING:
            raise ConnectionBroken("detach while skipping the rest of an oversized message")
        unread = b"".join(self._core.encode(m) for m in self._pushback_messages)
        return unread + self._core.trailing_data


async def attach_framing(
    stream: Any, core: FramingCoreLike, name: str, deadline: float
) -> FramedStream:
    """The shared ``attach`` of byte-framing layers: adopt, kind check, wrap."""
    below = await begin_attach(stream, Kind.BYTES, name)
    assert isinstance(below, ByteStream)
    check_deadline(deadline)
    await trio.lowlevel.checkpoint()
    return FramedStream(below, core, name)


# --- libdill facade shared by every message layer -------------------------------------------


async def msend(s: MessageStream, buf: Any, deadline: float = FOREVER) -> None:
    """libdill's ``msend``: send one message on any message stream."""
    if not isinstance(s, MessageStream):
        raise NotSupported(f"not a message stream: {type(s).__name__}")
    await s.send_message(buf, deadline)


async def mrecv(s: MessageStream, deadline: float = FOREVER) -> bytes | None:
    """libdill's ``mrecv``: one message, or None at the peer's end of stream."""
    if not isinstance(s, MessageStream):
        raise NotSupported(f"not a message stream: {type(s).__name__}")
    return await s.receive_message(deadline)
