"""What the sans-IO framing cores share: sentinels, argument checks, buffer, state machine.

Theory of operation
-------------------
A core is a pure object: bytes go in through ``feed()`` / ``feed_eof()``, messages come out of
``next_message()``, and ``encode()`` turns a message into wire bytes. Nothing here does I/O,
waits, or imports Trio; the Trio layers (``_prefix``, ``_suffix``, ``_term``) drive a core.

``next_message()`` answers with a message (``bytes``) or one of two sentinels:

* :data:`NEED_DATA`: no complete message is buffered; feed more bytes (or EOF) first.
* :data:`END_OF_STREAM`: the stream below ended cleanly at a message boundary. The answer is
  sticky: every later call returns it again.

Both are single-member enums, so ``mypy`` narrows ``result is NEED_DATA`` exactly.

Received bytes live in a :class:`ReceiveBuffer`: one ``bytearray`` and a read offset. Consuming
only moves the offset; the array is compacted lazily, once the consumed head is at least half of
it, so feeding and parsing one byte at a time stays O(n) overall.

Each core keeps one state value, changed only through :class:`StateMachine`, which looks the
pair ``(state, event)`` up in an explicit transition table; a pair not in the table is a bug
and raises :class:`InvalidArgument` instead of silently drifting. The two byte-framing cores
(prefix, suffix) share :class:`FrameState` / :class:`FrameEvent` and the EOF rules in
:class:`FramingCore`; each keeps only its own parsing and skipping.

This module imports only the contract (``_errors``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Generic, TypeVar, final

from .._errors import ConnectionBroken, InvalidArgument, InvalidArgumentType

__all__ = [
    "DEFAULT_MAX_SIZE",
    "END_OF_STREAM",
    "NEED_DATA",
    "BytesLike",
    "EndOfStream",
    "FrameEvent",
    "FrameState",
    "FramingCore",
    "NeedData",
    "ReceiveBuffer",
    "StateMachine",
    "check_bytes_like",
    "check_int",
    "eof_transitions",
    "to_bytes",
]

#: The receiver's default limit on one message: 1 MiB.
DEFAULT_MAX_SIZE: Final = 1 << 20

#: What ``feed()`` and ``encode()`` accept.
BytesLike = bytes | bytearray | memoryview


class NeedData(enum.Enum):
    """Type of :data:`NEED_DATA`: more bytes must be fed before a message is complete."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.name


class EndOfStream(enum.Enum):
    """Type of :data:`END_OF_STREAM`: the stream ended cleanly at a message boundary."""

    END_OF_STREAM = "END_OF_STREAM"

    def __repr__(self) -> str:
        return self.name


#: ``next_message()`` needs more bytes (or ``feed_eof()``) first.
NEED_DATA: Final = NeedData.NEED_DATA
#: The stream ended cleanly; returned again on every later call.
END_OF_STREAM: Final = EndOfStream.END_OF_STREAM


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) in ``[low, high]``, else EINVAL.

    A wrong type is :class:`InvalidArgumentType` (EINVAL, and also a ``TypeError``).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"{name} must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise InvalidArgument(f"{name} must be {bounds}, not {value}")
    return value


def check_bytes_like(value: object, name: str) -> BytesLike:
    """Return ``value`` if it is ``bytes``, ``bytearray`` or ``memoryview``, else EINVAL."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgumentType(f"{name} must be bytes-like, not {type(value).__name__}")
    return value


def to_bytes(value: object, name: str) -> bytes:
    """Return an immutable ``bytes`` copy of the bytes-like ``value`` (EINVAL otherwise)."""
    data = check_bytes_like(value, name)
    return data if isinstance(data, bytes) else bytes(data)


@final
class ReceiveBuffer:
    """A ``bytearray`` plus a read offset; offsets given to and returned by methods are relative
    to the first unconsumed byte. Consumed space is reclaimed lazily (amortised O(1))."""

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def append(self, data: BytesLike) -> None:
        """Add received bytes at the end."""
        self._data += data

    def find(self, sub: bytes, start: int, end: int | None = None) -> int:
        """Offset of the first ``sub`` lying within ``[start, end)``, or -1."""
        base = self._start
        index = self._data.find(sub, base + start, len(self._data) if end is None else base + end)
        return index - base if index >= 0 else -1

    def peek(self, count: int | None = None) -> bytes:
        """A copy of the first ``count`` unconsumed bytes (all of them if ``None``)."""
        end = len(self._data) if count is None else self._start + count
        with memoryview(self._data) as view, view[self._start : end] as part:
            return bytes(part)  # one copy; both views are released before any resize

    def take(self, count: int) -> bytes:
        """Remove and return the first ``count`` bytes."""
        data = self.peek(count)
        self.discard(count)
        return data

    def discard(self, count: int) -> None:
        """Drop the first ``count`` bytes."""
        self._start += count
        if self._start >= len(self._data):
            self._data.clear()
            self._start = 0
        elif self._start * 2 >= len(self._data):
            del self._data[: self._start]
            self._start = 0


S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


@final
class StateMachine(Generic[S, E]):
    """One state value driven by an explicit ``{(state, event): new_state}`` table."""

    __slots__ = ("_state", "_table")

    def __init__(self, table: Mapping[tuple[S, E], S], initial: S) -> None:
        self._table = table
        self._state = initial

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    def fire(self, event: E) -> S:
        """Apply ``event``; returns the new state. An impossible transition raises EINVAL."""
        try:
            self._state = self._table[(self._state, event)]
        except KeyError:
            raise InvalidArgument(
                f"impossible transition: {event.name} in state {self._state.name}"
            ) from None
        return self._state


class FrameState(enum.Enum):
    """States of the byte-framing cores (prefix uses HEADER/PAYLOAD, suffix uses SCANNING)."""

    HEADER = "HEADER"  #: prefix: waiting for a complete length header
    PAYLOAD = "PAYLOAD"  #: prefix: header read (still buffered), waiting for the payload
    SCANNING = "SCANNING"  #: suffix: looking for the delimiter
    SKIPPING = "SKIPPING"  #: discarding an oversized message that was already reported
    EOF = "EOF"  #: the stream ended cleanly at a message boundary (final)
    BROKEN = "BROKEN"  #: the stream ended inside a message (final, sticky ECONNRESET)


class FrameEvent(enum.Enum):
    """Events that move a byte-framing core from one :class:`FrameState` to another."""

    HEADER_READ = "HEADER_READ"  #: a complete header within the limit
    MESSAGE_READ = "MESSAGE_READ"  #: a complete message was returned
    TOO_LARGE = "TOO_LARGE"  #: a message is over max_size; it was reported, now skip it
    SKIPPED = "SKIPPED"  #: the last byte of the oversized message was discarded
    EOF_EMPTY = "EOF_EMPTY"  #: EOF was fed, nothing is left to parse
    EOF_PARTIAL = "EOF_PARTIAL"  #: EOF was fed with bytes of an incomplete message left


def eof_transitions(
    boundary: FrameState, inside: tuple[FrameState, ...]
) -> dict[tuple[FrameState, FrameEvent], FrameState]:
    """The EOF rows of a framing table: clean only in ``boundary`` with nothing buffered."""
    table = {(boundary, FrameEvent.EOF_EMPTY): FrameState.EOF}
    for state in (boundary, *inside):
        table[(state, FrameEvent.EOF_PARTIAL)] = FrameState.BROKEN
    for state in inside:
        table[(state, FrameEvent.EOF_EMPTY)] = FrameState.BROKEN
    return table


class FramingCore:
    """What :class:`PrefixCore` and :class:`SuffixCore` share: the buffer, EOF, the limit.

    A subclass provides ``_parse()`` (return a message or :data:`NEED_DATA`, or raise
    :class:`MessageTooLarge`) and ``_skip()`` (discard what it can of an oversized message,
    firing ``SKIPPED`` once it is gone).
    """

    __slots__ = ("_buffer", "_eof", "_machine", "_max_size")

    def __init__(
        self,
        table: Mapping[tuple[FrameState, FrameEvent], FrameState],
        initial: FrameState,
        max_size: object,
    ) -> None:
        self._max_size = check_int(max_size, "max_size", 1)
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._machine = StateMachine(table, initial)

    @property
    def max_size(self) -> int:
        """The largest message the receive side accepts, in bytes."""
        return self._max_size

    @property
    def state(self) -> FrameState:
        """The current :class:`FrameState`."""
        return self._machine.state

    @property
    def trailing_data(self) -> bytes:
        """Bytes received but not yet returned as messages, in stream order.

        At a message boundary (any state but ``SKIPPING``) this is exactly the rest of the
        byte stream, ready to be pushed back in front of the stream below on detach.
        """
        return self._buffer.peek()

    @property
    def pending(self) -> int:
        """How many bytes are buffered (``len(trailing_data)``)."""
        return len(self._buffer)

    def feed(self, data: BytesLike) -> None:
        """Append bytes received from the stream below. EINVAL after :meth:`feed_eof`."""
        check_bytes_like(data, "data")
        if self._eof:
            raise InvalidArgument("feed() after feed_eof()")
        self._buffer.append(data)
        if self._machine.state is FrameState.SKIPPING:
            self._skip()  # an oversized message never accumulates in memory

    def feed_eof(self) -> None:
        """The byte stream below ended; calling it again changes nothing."""
        self._eof = True

    def next_message(self) -> bytes | NeedData | EndOfStream:
        """The next complete message, :data:`NEED_DATA` or :data:`END_OF_STREAM`.

        Raises :class:`MessageTooLarge` once per oversized message (which is then skipped) and
        :class:`ConnectionBroken` when the stream ended inside a message (again on every call).
        """
        state = self._machine.state
        if state is FrameState.EOF:
            return END_OF_STREAM
        if state is FrameState.BROKEN:
            raise _truncated()
        result = self._parse()
        if result is NEED_DATA and self._eof:
            event = FrameEvent.EOF_PARTIAL if self._buffer else FrameEvent.EOF_EMPTY
            if self._machine.fire(event) is FrameState.BROKEN:
                raise _truncated()
            return END_OF_STREAM
        return result

    def _parse(self) -> bytes | NeedData:
        raise NotImplementedError  # pragma: no cover

    def _skip(self) -> None:
        raise NotImplementedError  # pragma: no cover


def _truncated() -> ConnectionBroken:
    return ConnectionBroken("stream ended inside a message")
