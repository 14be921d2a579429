"""The skeleton every transport and layer shares: ownership, state checks, attributes, pushback.

Theory of operation
-------------------
Everything in a protocol stack is a :class:`Handle`: transports at the bottom, attached layers
above. A handle has

* ``_below``: the handle it is attached to (``None`` for a transport). Walking ``_below`` from
  the top gives the stack; typed attributes are looked up the same way, so
  ``stack.top.extra(TLSAttribute.alpn)`` works however many layers sit above TLS.
* ``_owner``: the layer attached *above* it, if any. libdill hands ownership of ``s`` to the
  layer ``attach`` returns; here every public method of an owned handle raises
  :class:`BadHandle` (EBADF), and the owner uses the handle through the internal
  ``_below`` reference, which skips that check (:meth:`Handle._check` takes ``by``).
* ``_phase``: OPEN, DETACHED or CLOSED. Closed and detached handles raise ``BadHandle`` too.

The shutdown protocol is the same for every layer, so it is written once here:

* :meth:`Handle.aclose` is libdill's ``hclose``: forceful and recursive; it releases the
  layer's resources (its state block) and closes the handle below.
* :meth:`AttachedMixin.detach` runs the layer's ``_detach_protocol`` (close_notify, final
  message...) and, on success, gives the handle below back to the user with every byte or
  message read past the layer's end *pushed back* in front of it (:meth:`ByteStream.unread`);
  on failure or cancellation it closes the whole stack, as libdill does, and re-raises.

Pushback is what makes detach lossless: a layer below may have read more than the layer above
it consumed (TLS reading past close_notify, framing reading past the last message). Every
receive serves pushed-back data first.
"""

from __future__ import annotations

import contextlib
import enum
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Protocol, TypeVar, final

import trio

# The typed attributes are re-exported: a layer takes the whole skeleton from here.
from ._attributes import StackAttribute, TLSAttribute, TypedAttribute
from ._cores._common import END_OF_STREAM, NEED_DATA, EndOfStream, NeedData
from ._deadline import FOREVER
from ._errors import BadHandle, InvalidArgument, InvalidArgumentType, StackError
from ._mem import StateBlock

__all__ = [
    "AttachedMixin",
    "ByteStream",
    "ConflictDetector",
    "Handle",
    "Kind",
    "Layer",
    "MessageStream",
    "Phase",
    "StackAttribute",
    "TLSAttribute",
    "TypedAttribute",
]

T = TypeVar("T")
H = TypeVar("H", bound="Handle", covariant=True)


class Kind(enum.Enum):
    """What a handle carries: a byte stream or a stream of messages."""

    BYTES = "bytestream"
    MESSAGES = "message"


class Phase(enum.IntEnum):
    """Life of a handle. Stored as one byte in a layer's state block."""

    OPEN = 0
    DETACHED = 1
    CLOSED = 2


# Enum member lookups cost about 160 ns each on CPython 3.11; ``_check`` runs on every call.
_OPEN: Final = Phase.OPEN


@final
class ConflictDetector:
    """Raise :class:`trio.BusyResourceError` when two tasks use one direction at once.

    Trio's streams promise this check; it turns a silent corruption into a clear error.
    ``with detector:`` guards an operation. The TLS layer's send and receive, the hottest
    paths, spell the same steps out, because ``__enter__`` and ``__exit__`` cost about 400 ns
    a call there against 40 ns inline::

        if detector.held:
            raise detector.conflict()
        detector.held = True
        try:
            ...
        finally:
            detector.held = False
    """

    __slots__ = ("_message", "held")

    def __init__(self, message: str) -> None:
        self._message = message
        self.held = False

    def conflict(self) -> trio.BusyResourceError:
        """The error for a second task that finds the direction held."""
        return trio.BusyResourceError(self._message)

    def __enter__(self) -> None:
        if self.held:
            raise self.conflict()
        self.held = True

    def __exit__(self, *exc: object) -> None:
        self.held = False


_MISSING: Any = object()

CLOSE_GRACE: Final = 1.0
"""Seconds a close may spend handing a last word (close_notify) to a slow wrapped stream."""


class Handle:
    """Anything in a stack: a transport or an attached layer.

    Subclasses set ``kind`` and implement :meth:`_close_resources` and :meth:`label`.
    """

    kind: ClassVar[Kind]
    # Slots all the way down (Trio's ABCs have them too): a server holds thousands of these.
    # ``_block`` is an attached layer's state block; it lives here because two bases of a
    # layer's stream (AttachedMixin and ByteStream) cannot both add slots.
    __slots__ = ("__weakref__", "_below", "_block", "_owner", "_phase")
    _below: Handle | None

    def __init__(self) -> None:
        self._below = None
        self._block: StateBlock | None = None
        self._owner: Handle | None = None
        self._phase = Phase.OPEN

    # --- identity -----------------------------------------------------------------------------

    @abstractmethod
    def label(self) -> str:
        """This handle's part of the stack's repr, e.g. ``"tcp"`` or ``"tls(server, TLSv1.3)"``."""

    def __repr__(self) -> str:
        state = "" if self._phase is Phase.OPEN and self._owner is None else f" {self.status}"
        return f"<{type(self).__name__} {self.label()}{state}>"

    @property
    def status(self) -> str:
        """``"open"``, ``"owned"`` (a layer is attached above), ``"detached"`` or ``"closed"``."""
        if self._phase is Phase.OPEN:
            return "owned" if self._owner is not None else "open"
        return self._phase.name.lower()

    @property
    def closed(self) -> bool:
        """True once this handle was closed (directly, or by closing a layer above it)."""
        return self._phase is Phase.CLOSED

    @property
    def below(self) -> Handle | None:
        """The handle this one is attached to; ``None`` for a transport."""
        return self._below

    # --- the state check every public method starts with --------------------------------------

    def _check(self, by: Handle | None = None) -> None:
        """Raise :class:`BadHandle` unless the caller may use this handle.

        ``by`` is the layer calling from above: the owner may use what it owns.
        """
        if self._phase is not _OPEN:
            raise BadHandle(f"{type(self).__name__} is {self._phase.name.lower()}")
        if self._owner is not None and by is not self._owner:
            raise BadHandle(
                f"{type(self).__name__} is owned by the {self._owner.label()} layer attached "
                "above it; use the stream that attach returned"
            )

    # --- ownership (used by layers and the stack) ---------------------------------------------

    def _adopt(self, owner: Handle) -> None:
        """``owner`` attaches above this handle; from now on only it may use this one."""
        self._check()
        self._owner = owner

    def _disown(self) -> None:
        """The layer above detached: the handle is the user's again."""
        self._owner = None

    # --- typed attributes ---------------------------------------------------------------------

    def _attributes(self) -> Mapping[TypedAttribute[Any], Callable[[], Any]]:
        """This handle's own attributes; layers override and merge."""
        return {}

    @property
    def extra_attributes(self) -> Mapping[TypedAttribute[Any], Callable[[], Any]]:
        """All attributes reachable from here: this handle's and those of everything below."""
        merged = dict(self._below.extra_attributes) if self._below is not None else {}
        merged.update(self._attributes())
        return merged

    def extra(self, attribute: TypedAttribute[T], default: T = _MISSING) -> T:
        """Look up a typed attribute on this handle or any handle below it.

        Raises :class:`LookupError` when nothing provides it and no default is given.
        """
        handle: Handle | None = self
        while handle is not None:
            getter = handle._attributes().get(attribute)
            if getter is not None:
                value: T = getter()
                return value
            handle = handle._below
        if default is _MISSING:
            raise LookupError(f"no layer in this stack provides {attribute.name}")
        return default

    # --- closing ------------------------------------------------------------------------------

    @abstractmethod
    async def _close_resources(self) -> None:
        """Release what this handle holds (fds, state block) and close the handle below."""

    async def aclose(self) -> None:
        """Close this handle and everything below it, forcefully (libdill's ``hclose``).

        Closing twice is fine, and so is closing a layer that was detached: that does nothing
        (what it handed back belongs to the caller now). A layer attached above owns this
        handle: close that one instead.
        """
        if self._phase is not Phase.OPEN:
            await trio.lowlevel.checkpoint()
            return
        if self._owner is not None:
            raise BadHandle(f"{type(self).__name__} is owned by a layer above; close that one")
        await self._close_now()

    async def _close_now(self) -> None:
        """Close regardless of ownership (the owner closing what it owns).

        A detached layer has nothing left to close: the handle below is no longer its own.
        """
        if self._phase is not Phase.OPEN:
            return
        self._phase = Phase.CLOSED
        self._owner = None
        await self._close_resources()

    async def __aenter__(self: H) -> H:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owner is None:
            await self.aclose()


async def close_shielded(handle: Handle) -> None:
    """Close ``handle`` even inside a cancelled scope (used on every failure path)."""
    with trio.CancelScope(shield=True):
        await handle._close_now()


class ByteStream(Handle, trio.abc.HalfCloseableStream):
    """A byte stream in a stack: a transport, or a bytestream layer such as TLS.

    Adds to :class:`trio.abc.HalfCloseableStream`: absolute ``deadline`` arguments,
    :meth:`receive_into` (fills your buffer, no intermediate bytes object) and the pushback
    buffer that makes detach lossless.
    """

    kind = Kind.BYTES
    __slots__ = ("_pushback",)

    def __init__(self) -> None:
        super().__init__()
        self._pushback = bytearray()

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        """Put ``data`` back in front of this stream: the next receives return it first.

        Layers call this on detach with what they read past their own end; you can use it for
        protocol sniffing too (read a few bytes, decide, unread them, attach).
        """
        self._pushback[:0] = data

    def _take_pushback(self, max_bytes: int) -> bytes:
        data = bytes(self._pushback[:max_bytes])
        del self._pushback[:max_bytes]
        return data

    def _take_pushback_into(self, buffer: memoryview) -> int:
        n = min(len(buffer), len(self._pushback))
        buffer[:n] = self._pushback[:n]
        del self._pushback[:n]
        return n

    # Public methods check ownership and delegate; the layer that owns this stream calls the
    # underscore methods directly. Subclasses implement the underscore methods and serve the
    # pushback buffer first in both receive methods.

    async def receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        """Receive up to ``max_bytes`` bytes (a default chunk if ``None``); ``b""`` at EOF."""
        self._check()
        return await self._receive_some(max_bytes, deadline)

    async def receive_into(self, buffer: Any, deadline: float = FOREVER) -> int:
        """Receive up to ``len(buffer)`` bytes into ``buffer``; return the count, 0 at EOF.

        No intermediate ``bytes`` object is made: the fast way to read bulk data::

            buf = bytearray(65536)
            while n := await stream.receive_into(buf):
                sink.write(memoryview(buf)[:n])
        """
        self._check()
        return await self._receive_into(buffer, deadline)

    async def send_all(self, data: Any, deadline: float = FOREVER) -> None:
        """Send every byte of ``data`` (bytes-like) before returning."""
        self._check()
        await self._send_all(data, deadline)

    async def wait_send_all_might_not_block(self) -> None:
        """Block until ``send_all`` might not block (Trio's flow-control hint)."""
        self._check()
        await self._wait_send_all_might_not_block()

    async def send_eof(self, deadline: float = FOREVER) -> None:
        """Half-close: the peer's receives return ``b""``; this side can still receive."""
        self._check()
        await self._send_eof(deadline)

    @abstractmethod
    async def _receive_some(self, max_bytes: int | None, deadline: float) -> bytes: ...

    def _receive_nowait(self, view: memoryview) -> int | None:
        """For the owner: move what is available without waiting; None if nothing is.

        Returns 0 at end of stream. Transports override this with a non-blocking system call;
        the default serves only pushed-back bytes.
        """
        if self._pushback:
            return self._take_pushback_into(view)
        return None

    def _send_nowait(self, data: bytes) -> int:
        """For the owner: send what can go without waiting; return how many bytes went.

        Fewer than ``len(data)`` means the owner must send the rest with ``_send_all`` before
        anything else. Transports override this with one non-blocking system call; the default
        sends nothing, so the owner always takes the waiting path.
        """
        return 0

    async def _wait_receivable(self, deadline: float) -> bool:
        """For the owner: wait until ``_receive_nowait`` can make progress.

        Returns False when this stream cannot wait without reading (then use
        ``_receive_into``); transports over file descriptors return True after waiting.
        """
        return False

    async def _receive_for_owner(self, view: memoryview, deadline: float) -> tuple[int, bool]:
        """For the owner: move at least one byte (0 at end of stream) into ``view``.

        What is already there is taken without waiting; otherwise it waits (through
        ``_wait_receivable`` where the stream can wait without reading). Returns the count
        and whether it waited, so the owner's call can skip its own final checkpoint.
        """
        n = self._receive_nowait(view)
        waited = n is None
        while n is None:
            if not await self._wait_receivable(deadline):
                n = await self._receive_into(view, deadline, False)
            else:
                n = self._receive_nowait(view)
        return n, waited

    async def _send_on_close(self, data: bytes) -> None:
        """For the owner: best-effort send of a last word (close_notify, an alert) on close.

        Never raises and never blocks for long: transports try one non-blocking send; this
        default gives a wrapped stream ``CLOSE_GRACE`` seconds. Losing these bytes only costs
        the peer a clean close.
        """
        quiet = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        with trio.move_on_after(CLOSE_GRACE), quiet:
            await self._send_all(data, FOREVER, False)

    # ``checkpoint=False``: the caller (the layer above) is inside a call of its own that
    # checkpoints; skip the schedule point here so one user call costs one round trip.

    @abstractmethod
    async def _receive_into(self, buffer: Any, deadline: float, checkpoint: bool = True) -> int: ...

    @abstractmethod
    async def _send_all(self, data: Any, deadline: float, checkpoint: bool = True) -> None: ...

    @abstractmethod
    async def _wait_send_all_might_not_block(self) -> None: ...

    @abstractmethod
    async def _send_eof(self, deadline: float) -> None: ...


def check_max_bytes(max_bytes: int | None, default: int) -> int:
    """Validate ``receive_some``'s ``max_bytes`` the way Trio's streams do (EINVAL < 1)."""
    if max_bytes is None:
        return default
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
        raise InvalidArgumentType(f"max_bytes must be an int, not {type(max_bytes).__name__}")
    if max_bytes < 1:
        raise InvalidArgument(f"max_bytes must be >= 1, not {max_bytes}")
    return max_bytes


def as_writable_view(buffer: Any) -> memoryview:
    """A flat byte view of ``buffer`` for ``receive_into``; EINVAL when it cannot be written to
    or is empty."""
    if type(buffer) is bytearray and buffer:  # the common case, on every receive: no checks
        return memoryview(buffer)
    try:
        view = memoryview(buffer)
    except TypeError:
        raise InvalidArgumentType(
            f"receive_into needs a writable buffer, not {type(buffer).__name__}"
        ) from None
    if view.readonly:
        raise InvalidArgument("receive_into needs a writable buffer")
    if not view.c_contiguous:  # a strided 1-D byte view too (recv_into refuses it)
        raise InvalidArgument("receive_into needs a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if not view:  # 0 bytes received would read as end of stream
        raise InvalidArgument("receive_into needs a buffer of at least one byte")
    return view


class MessageStream(Handle):
    """A stream of whole messages in a stack (what the framing layers return).

    ``async for message in stream`` receives until the peer's end of stream.
    """

    kind = Kind.MESSAGES
    __slots__ = ("_pushback_messages",)

    def __init__(self) -> None:
        super().__init__()
        self._pushback_messages: deque[bytes] = deque()

    def unread_message(self, message: bytes) -> None:
        """Put one message back in front: the next :meth:`receive_message` returns it."""
        self._pushback_messages.appendleft(message)

    async def send_message(self, data: Any, deadline: float = FOREVER) -> None:
        """Send one message (bytes-like)."""
        self._check()
        await self._send_message(data, deadline)

    async def receive_message(self, deadline: float = FOREVER) -> bytes | None:
        """Receive one whole message; ``None`` once the peer ended the stream."""
        self._check()
        return await self._receive_message(deadline)

    async def send_eof(self, deadline: float = FOREVER) -> None:
        """Tell the peer no more messages follow (libdill's ``*_done``)."""
        self._check()
        await self._send_eof(deadline)

    async def _receive_message(self, deadline: float) -> bytes | None:
        # The owner above calls this directly; pushed-back messages come first.
        if self._pushback_messages:
            await trio.lowlevel.checkpoint()
            return self._pushback_messages.popleft()
        return await self._receive_next(deadline)

    @abstractmethod
    async def _receive_next(self, deadline: float) -> bytes | None: ...

    @abstractmethod
    async def _send_message(self, data: Any, deadline: float) -> None: ...

    @abstractmethod
    async def _send_eof(self, deadline: float) -> None: ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (message := await self.receive_message()) is not None:
            yield message


M = TypeVar("M")


async def receive_whole(
    next_item: Callable[[], M | NeedData | EndOfStream],
    read: Callable[[float], Awaitable[bool]],
    deadline: float,
) -> M | None:
    """The receive loop of every message layer: one whole message from a sans-IO core, or
    ``None`` at the end of the message stream.

    ``next_item()`` asks the core (``NEED_DATA`` while its message is partial,
    ``END_OF_STREAM`` after the last one); ``read(deadline)``
    feeds it from the stream below and says whether it had to wait. The call is one Trio
    checkpoint however many reads it takes: cancellation is checked on entry, and a call that
    never waited still yields once at the end. A partial message stays in the core, so a
    deadline or a cancel mid-message loses nothing.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while (item := next_item()) is NEED_DATA:
        waited = await read(deadline) or waited
    if not waited:
        await trio.lowlevel.cancel_shielded_checkpoint()
    return None if item is END_OF_STREAM else item


class AttachedMixin(Handle):
    """The shared detach/close skeleton of every layer's attached stream.

    A layer's stream subclasses this (first) and its kind's base, sets ``_below`` to the
    handle it attached to, and implements :meth:`_detach_protocol` (what "done + wait for the
    peer's done" means for that protocol, returning what was read past the end) and optionally
    :meth:`_release`.
    """

    __slots__ = ()
    _below: Handle

    def _bind(self, below: Handle, block: StateBlock | None = None) -> None:
        """Take ownership of ``below`` (called once, in the layer's ``attach``)."""
        below._adopt(self)
        self._below = below
        self._block = block

    def _release(self) -> None:
        """Drop this layer's own resources (not the handle below). Idempotent."""
        block, self._block = self._block, None
        if block is not None:
            block.release()

    async def _close_resources(self) -> None:
        try:
            self._release()
        finally:
            await self._below._close_now()

    @abstractmethod
    async def _detach_protocol(self, deadline: float) -> bytes | list[bytes]:
        """Shut this layer's protocol down cleanly; return bytes (or messages) read past its end."""

    async def _detach_handle(self, deadline: float) -> Handle:
        """The common part of ``detach``: run the protocol, then hand ``_below`` back.

        Any failure, including cancellation, closes the whole stack, as libdill's detach does.
        """
        self._check()
        try:
            leftover = await self._detach_protocol(deadline)
        except BaseException:
            await close_shielded(self)
            raise
        self._phase = Phase.DETACHED
        self._release()
        below = self._below
        below._disown()
        if isinstance(leftover, list):
            if not isinstance(below, MessageStream):  # pragma: no cover - layer bug
                raise StackError("a layer returned messages to a byte stream")
            for message in reversed(leftover):
                below.unread_message(message)
        elif leftover:
            if not isinstance(below, ByteStream):  # pragma: no cover - layer bug
                raise StackError("a layer returned bytes to a message stream")
            below.unread(leftover)
        return below


class Layer(Protocol[H]):
    """A recipe for attaching one protocol: what :meth:`ProtocolStack.push` takes.

    ``below_kind`` is what it attaches to; :meth:`attach` returns the attached handle and,
    like libdill, closes ``stream`` if it fails.
    """

    @property
    def below_kind(self) -> Kind: ...

    async def attach(self, stream: Any, deadline: float = FOREVER) -> H: ...
