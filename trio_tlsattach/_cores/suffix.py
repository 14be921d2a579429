"""Sans-IO core of the delimiter message layer (libdill's ``suffix_attach``, ``crlf_attach``).

Theory of operation
-------------------
On the wire every message is its payload followed by the delimiter (1 to 32 bytes)::

    SuffixCore(b"\\r\\n").encode(b"hello") == b"hello\\r\\n"

The receiver ends a message at the *first* occurrence of the delimiter, so ``encode`` refuses
(EINVAL) any payload for which ``payload + delimiter`` holds the delimiter earlier than at
``len(payload)``: a payload containing the delimiter, and also one whose tail overlaps the
delimiter's head (``b"a"`` with delimiter ``b"aa"``, ``b"x\\r\\n"`` with ``b"\\r\\n\\r\\n"``).
Whatever ``encode`` accepts, the receiver gets back byte for byte. ``max_size`` is the
receiver's limit only.

The receive side is a table-driven state machine over :class:`FrameState`::

    SCANNING --MESSAGE_READ-->  SCANNING
    SCANNING --TOO_LARGE---->   SKIPPING --SKIPPED-->  SCANNING
    SCANNING --EOF_EMPTY---->   EOF          (clean end at a message boundary)
    any      --EOF_PARTIAL-->   BROKEN       (the stream ended inside a message)

Scanning never starts over: positions before ``_search_from`` are known not to start the
delimiter, and after a fruitless search it resumes at ``len(buffer) - len(delimiter) + 1``, so
a delimiter split across feeds is found and one-byte feeds cost O(len(delimiter)) each. The
search is bounded to the first ``max_size + len(delimiter)`` bytes; if those hold no delimiter
the message is over the limit: :class:`MessageTooLarge` is raised once and the core moves to
``SKIPPING``, where (in ``feed`` too) it discards everything up to and including the next
delimiter, keeping at most ``len(delimiter) - 1`` bytes in case a delimiter is split across
feeds. The buffer thus stays within about ``max_size + len(delimiter)`` bytes plus one feed.

Per-connection state: the receive buffer, the state and the search resume offset.
"""

from __future__ import annotations

from typing import Final, final

from .._errors import InvalidArgument, MessageTooLarge
from ._common import (
    DEFAULT_MAX_SIZE,
    NEED_DATA,
    BytesLike,
    FrameEvent,
    FrameState,
    FramingCore,
    NeedData,
    eof_transitions,
    to_bytes,
)

__all__ = ["MAX_DELIMITER", "SuffixCore"]

#: The longest delimiter accepted, in bytes (libdill's limit).
MAX_DELIMITER: Final = 32

_S, _E = FrameState, FrameEvent

#: ``(state, event) -> new state`` for the suffix receive side.
TRANSITIONS: Final = {
    (_S.SCANNING, _E.MESSAGE_READ): _S.SCANNING,
    (_S.SCANNING, _E.TOO_LARGE): _S.SKIPPING,
    (_S.SKIPPING, _E.SKIPPED): _S.SCANNING,
    **eof_transitions(_S.SCANNING, (_S.SKIPPING,)),
}


@final
class SuffixCore(FramingCore):
    """Delimiter framing: each message is followed by ``delimiter``.

    ``delimiter`` is 1 to 32 bytes (``bytes``, ``bytearray`` or ``memoryview``) and
    ``max_size`` an int >= 1; anything else raises :class:`InvalidArgument`.
    """

    __slots__ = ("_delimiter", "_search_from")

    def __init__(self, delimiter: BytesLike, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._delimiter = to_bytes(delimiter, "delimiter")
        if not 1 <= len(self._delimiter) <= MAX_DELIMITER:
            raise InvalidArgument(
                f"delimiter must be 1..{MAX_DELIMITER} bytes, not {len(self._delimiter)}"
            )
        self._search_from = 0  # buffer offsets below this cannot start a delimiter
        super().__init__(TRANSITIONS, FrameState.SCANNING, max_size)

    def __repr__(self) -> str:
        return f"<SuffixCore {self._delimiter!r} state={self.state.name} pending={self.pending}>"

    @property
    def delimiter(self) -> bytes:
        """The bytes that end every message."""
        return self._delimiter

    def encode(self, message: BytesLike) -> bytes:
        """Wire bytes for one message: the payload, then the delimiter.

        :class:`InvalidArgument` if the receiver would split it elsewhere (see the module doc).
        """
        payload = to_bytes(message, "message")
        wire = payload + self._delimiter
        split = wire.find(self._delimiter)
        if split != len(payload):
            raise InvalidArgument(
                f"message would be cut at byte {split} of {len(payload)}: it contains "
                f"(or ends with the start of) the delimiter {self._delimiter!r}"
            )
        return wire

    def _parse(self) -> bytes | NeedData:
        buffer, machine, width = self._buffer, self._machine, len(self._delimiter)
        if machine.state is FrameState.SKIPPING:
            self._skip()
            if machine.state is FrameState.SKIPPING:
                return NEED_DATA
        limit = self._max_size + width
        index = buffer.find(self._delimiter, self._search_from, limit)
        if index >= 0:
            message = buffer.take(index)
            buffer.discard(width)
            self._search_from = 0
            machine.fire(FrameEvent.MESSAGE_READ)
            return message
        self._search_from = max(0, min(len(buffer), limit) - width + 1)
        if len(buffer) >= limit:
            machine.fire(FrameEvent.TOO_LARGE)
            self._skip()
            raise MessageTooLarge(
                f"no delimiter within max_size={self._max_size} bytes; message skipped"
            )
        return NEED_DATA

    def _skip(self) -> None:
        buffer, width = self._buffer, len(self._delimiter)
        index = buffer.find(self._delimiter, self._search_from)
        if index >= 0:
            buffer.discard(index + width)
            self._search_from = 0
            self._machine.fire(FrameEvent.SKIPPED)
            return
        # Keep only what may be the head of a delimiter split across feeds.
        buffer.discard(max(0, len(buffer) - (width - 1)))
        self._search_from = 0
