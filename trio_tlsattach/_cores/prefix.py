"""Sans-IO core of the length-prefix message layer (libdill's ``prefix_attach``).

Theory of operation
-------------------
On the wire every message is a header of ``hdrlen`` bytes (1 to 8) holding the payload length
as an unsigned integer, big-endian by default, followed by the payload::

    PrefixCore(3, big_endian=False).encode(b"First") == b"\\x05\\x00\\x00First"

A payload whose length does not fit in ``hdrlen`` bytes cannot be sent (EMSGSIZE). The send
side does not apply ``max_size``: that is the receiver's limit.

The receive side is a table-driven state machine over :class:`FrameState`::

    HEADER   --HEADER_READ-->  PAYLOAD  --MESSAGE_READ-->  HEADER
    HEADER   --TOO_LARGE---->  SKIPPING --SKIPPED------->  HEADER
    HEADER   --EOF_EMPTY---->  EOF          (clean end at a message boundary)
    any      --EOF_PARTIAL-->  BROKEN       (the stream ended inside a message)

The header stays in the buffer until the whole message is there, so in ``HEADER`` and
``PAYLOAD`` :attr:`PrefixCore.trailing_data` is exactly the unread rest of the byte stream.
A header announcing more than ``max_size`` bytes raises :class:`MessageTooLarge` once; the
header is dropped and exactly the announced number of payload bytes is discarded as it arrives
(in ``feed`` too, so an oversized message never sits in memory), then parsing resumes with the
next header.

Per-connection state: the receive buffer, the state, the announced length of the message being
read (``PAYLOAD``) or the bytes left to skip (``SKIPPING``).
"""

from __future__ import annotations

from typing import Final, Literal, final

from .._errors import InvalidArgument, MessageTooLarge
from ._common import (
    DEFAULT_MAX_SIZE,
    NEED_DATA,
    BytesLike,
    FrameEvent,
    FrameState,
    FramingCore,
    NeedData,
    check_int,
    eof_transitions,
    to_bytes,
)

__all__ = ["PrefixCore"]

_S, _E = FrameState, FrameEvent

#: ``(state, event) -> new state`` for the prefix receive side.
TRANSITIONS: Final = {
    (_S.HEADER, _E.HEADER_READ): _S.PAYLOAD,
    (_S.PAYLOAD, _E.MESSAGE_READ): _S.HEADER,
    (_S.HEADER, _E.TOO_LARGE): _S.SKIPPING,
    (_S.SKIPPING, _E.SKIPPED): _S.HEADER,
    **eof_transitions(_S.HEADER, (_S.PAYLOAD, _S.SKIPPING)),
}


@final
class PrefixCore(FramingCore):
    """Length-prefixed framing: ``hdrlen`` bytes of unsigned length, then the payload.

    ``hdrlen`` is 1 to 8, ``big_endian`` a ``bool``, ``max_size`` (the largest message the
    receive side accepts) an int >= 1; anything else raises :class:`InvalidArgument`.
    """

    __slots__ = ("_byteorder", "_hdrlen", "_limit", "_size", "_to_skip")

    def __init__(
        self, hdrlen: int, *, big_endian: bool = True, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        self._hdrlen = check_int(hdrlen, "hdrlen", 1, 8)
        if not isinstance(big_endian, bool):
            raise InvalidArgument(f"big_endian must be a bool, not {type(big_endian).__name__}")
        self._byteorder: Literal["big", "little"] = "big" if big_endian else "little"
        self._limit = 1 << (8 * self._hdrlen)
        self._size = 0  # PAYLOAD: announced payload length
        self._to_skip = 0  # SKIPPING: payload bytes still to discard
        super().__init__(TRANSITIONS, FrameState.HEADER, max_size)

    def __repr__(self) -> str:
        return (
            f"<PrefixCore hdrlen={self._hdrlen} {self._byteorder}-endian "
            f"state={self.state.name} pending={self.pending}>"
        )

    @property
    def hdrlen(self) -> int:
        """Length of the header in bytes (1 to 8)."""
        return self._hdrlen

    @property
    def big_endian(self) -> bool:
        """Whether the length header is big-endian (network order)."""
        return self._byteorder == "big"

    def encode(self, message: BytesLike) -> bytes:
        """Wire bytes for one message: the length header, then the payload.

        :class:`MessageTooLarge` if the length does not fit in ``hdrlen`` bytes.
        """
        payload = to_bytes(message, "message")
        size = len(payload)
        if size >= self._limit:
            raise MessageTooLarge(
                f"message of {size} bytes does not fit a {self._hdrlen}-byte length header"
            )
        return size.to_bytes(self._hdrlen, self._byteorder) + payload

    def _parse(self) -> bytes | NeedData:
        buffer, machine, hdrlen = self._buffer, self._machine, self._hdrlen
        if machine.state is FrameState.SKIPPING:
            self._skip()
            if machine.state is FrameState.SKIPPING:
                return NEED_DATA
        if machine.state is FrameState.HEADER:
            if len(buffer) < hdrlen:
                return NEED_DATA
            size = int.from_bytes(buffer.peek(hdrlen), self._byteorder)
            if size > self._max_size:
                buffer.discard(hdrlen)
                self._to_skip = size
                machine.fire(FrameEvent.TOO_LARGE)
                self._skip()
                raise MessageTooLarge(
                    f"message of {size} bytes is over max_size={self._max_size}; skipped"
                )
            self._size = size
            machine.fire(FrameEvent.HEADER_READ)
        if len(buffer) < hdrlen + self._size:
            return NEED_DATA
        buffer.discard(hdrlen)
        message = buffer.take(self._size)
        machine.fire(FrameEvent.MESSAGE_READ)
        return message

    def _skip(self) -> None:
        count = min(self._to_skip, len(self._buffer))
        self._buffer.discard(count)
        self._to_skip -= count
        if not self._to_skip:
            self._machine.fire(FrameEvent.SKIPPED)
