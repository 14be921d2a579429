"""The Trio side shared by the byte-framing layers (prefix, suffix): one stream, many cores.

Theory of operation
-------------------
A framing layer turns the byte stream below into a stream of messages. What a message looks
like on the wire is entirely the business of its sans-IO core (``_cores``: a length header for
prefix, a delimiter for suffix), so the Trio side is written once, here: :class:`FramedStream`
owns a core and the byte stream below, and ``PrefixLayer``/``SuffixLayer`` only choose the core.

* **send**: ``core.encode(message)`` first, so a bad message (not bytes-like: EINVAL; holding
  the delimiter: EINVAL; too long for the header: EMSGSIZE) fails before a byte is sent and the
  stream stays intact; then one ``send_all`` below. A send interrupted part-way (deadline,
  cancel) leaves the peer mid-message, so the stream below breaks that direction for good.
* **receive**: ask the core for the next message; while it answers ``NEED_DATA``, move bytes
  from below into a reused 64 KiB buffer and feed them. The read tries what is already there
  first (``_receive_nowait``) and only then waits under the deadline, so ``IMMEDIATE`` returns
  a message that is already buffered. Bytes of a partial message stay in the core, so a receive
  that times out or is cancelled, even mid-message, loses nothing: the next call carries on.
  An oversized message raises :class:`MessageTooLarge` (EMSGSIZE) once; the core skips it and
  the stream stays usable. EOF inside a message is :class:`ConnectionBroken` (ECONNRESET),
  sticky; EOF at a boundary is the end of the message stream (``None``, iteration stops).
* **checkpoints**: each public call is one Trio checkpoint however many reads it takes: reads
  below use ``checkpoint=False``, and the call checks for cancellation on entry and yields once
  at the end unless it already waited.
* **done** (``send_eof``): half-close the byte stream below; byte framing has no end marker of
  its own (that is what the term layer adds). Later sends are :class:`SendAfterDone` (EPIPE).
* **detach**: hand the byte stream back with everything read past the last returned message
  pushed back in front of it, so nothing is lost: the core's ``trailing_data`` (at a message
  boundary or in the middle of one: a partial message goes back as the bytes it was), preceded
  by messages put back with ``unread_message``, re-encoded. Detaching while the core is
  *skipping* the rest of an oversized message first finishes the skip (reading from below
  within the detach deadline), so the stream is handed back at the next message boundary;
  EOF before the skip ends is :class:`ConnectionBroken` and, like every failed detach, closes
  the stack. A detach while another task sends or receives is ``trio.BusyResourceError``.

Per-connection state: the core (its buffer and state), a 64 KiB receive buffer and two
flags; framing layers take no caller memory block.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import trio

from ._base import AttachedMixin, ByteStream, ConflictDetector, Kind, MessageStream, receive_whole
from ._cores import EndOfStream, NeedData
from ._cores._common import FrameState
from ._deadline import FOREVER, check_deadline
from ._errors import ConnectionBroken, NotSupported, SendAfterDone
from ._transports import begin_attach

__all__ = [
    "FramedStream",
    "FramingCoreLike",
    "attach_framing",
    "framing_detach",
    "mrecv",
    "msend",
]

RECEIVE_SIZE: Final = 65536
"""Bytes moved from the stream below per read."""


class FramingCoreLike(Protocol):
    """What :class:`FramedStream` needs from a byte-framing core (PrefixCore, SuffixCore)."""

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
        tls = await msgs.detach()       # unread bytes are pushed back in front of tls
    """

    __slots__ = (
        "_below_eof",
        "_buffer",
        "_core",
        "_name",
        "_receive_conflict",
        "_send_conflict",
        "_send_done",
    )
    _below: ByteStream

    def __init__(self, below: ByteStream, core: FramingCoreLike, name: str) -> None:
        super().__init__()
        self._core = core
        self._name = name
        self._bind(below)
        self._send_done = False
        self._below_eof = False
        self._buffer = bytearray(RECEIVE_SIZE)
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )

    def label(self) -> str:
        """``prefix(4)``, ``suffix(b'\\n')``, ``crlf``: this layer's part of a stack's repr."""
        return self._name

    @property
    def core(self) -> FramingCoreLike:
        """The sans-IO core (for inspection: its ``state``, ``pending``...; do not feed it)."""
        return self._core

    # --- send side ------------------------------------------------------------------------------

    async def _send_message(self, data: Any, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            if self._send_done:
                raise SendAfterDone("send after send_eof()")
            wire = self._core.encode(data)  # EINVAL/EMSGSIZE before anything is sent
            await self._below._send_all(wire, checked)  # the call's one checkpoint

    # --- receive side ---------------------------------------------------------------------------

    async def _receive_next(self, deadline: float = FOREVER) -> bytes | None:
        checked = check_deadline(deadline)
        with self._receive_conflict:
            return await receive_whole(self._core.next_message, self._read, checked)

    async def _read(self, deadline: float) -> bool:
        """Feed the core what the stream below has (waiting if need be); True if it waited."""
        view = memoryview(self._buffer)
        n, waited = await self._below._receive_for_owner(view, deadline)
        if n:
            self._core.feed(view[:n])
        else:
            self._below_eof = True
            self._core.feed_eof()
        return waited

    # --- done -----------------------------------------------------------------------------------

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            self._send_done = True
            await self._below._send_eof(checked)

    # --- detach ---------------------------------------------------------------------------------

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """Stop framing; return the byte stream below with unread bytes pushed back in front.

        Nothing is exchanged with the peer (the two ends agree on where framing stops, as in
        libdill). A partial message goes back as its bytes; the rest of an oversized message
        being skipped is read and dropped first. On failure the whole stack is closed::

            tls = await msgs.detach(deadline=after(5))
            await tls.send_all(b"raw bytes again")
        """
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below

    async def _detach_protocol(self, deadline: float) -> bytes:
        checked = check_deadline(deadline)
        with self._send_conflict, self._receive_conflict:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while self._core.state is FrameState.SKIPPING:
                if self._below_eof:
                    raise ConnectionBroken("the stream ended inside an oversized message")
                waited = await self._read(checked) or waited
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            unread = b"".join(self._core.encode(m) for m in self._pushback_messages)
            self._pushback_messages.clear()
            return unread + self._core.trailing_data


async def attach_framing(
    stream: Any, core: FramingCoreLike, name: str, deadline: float
) -> FramedStream:
    """The shared ``attach`` of byte-framing layers: adopt, check the kind, wrap.

    A message stream (or anything not a byte stream) is :class:`ProtocolMismatch` and is
    closed, as libdill's attach does on failure.
    """
    check_deadline(deadline)  # EINVAL before the stream is touched
    below = await begin_attach(stream, Kind.BYTES, name)
    assert isinstance(below, ByteStream)
    await trio.lowlevel.checkpoint()
    return FramedStream(below, core, name)


async def framing_detach(s: FramedStream, deadline: float = FOREVER) -> ByteStream:
    """The shared libdill ``*_detach`` of byte-framing layers (ENOTSUP on anything else)."""
    if not isinstance(s, FramedStream):
        raise NotSupported(f"not a framing layer: {type(s).__name__}")
    return await s.detach(deadline)


# --- libdill facade shared by every message layer -------------------------------------------


async def msend(s: MessageStream, buf: Any, deadline: float = FOREVER) -> None:
    """libdill's ``msend``: send one message on any message stream (ENOTSUP otherwise).

    >>> await msend(msgs, b"hello", after(5))
    """
    if not isinstance(s, MessageStream):
        raise NotSupported(f"not a message stream: {type(s).__name__}")
    await s.send_message(buf, deadline)


async def mrecv(s: MessageStream, deadline: float = FOREVER) -> bytes | None:
    """libdill's ``mrecv``: one message, or ``None`` at the peer's end of stream.

    (libdill reports that end as EPIPE; here it is ``None``, as ``receive_message`` gives.)

    >>> message = await mrecv(msgs, after(5))
    """
    if not isinstance(s, MessageStream):
        raise NotSupported(f"not a message stream: {type(s).__name__}")
    return await s.receive_message(deadline)
