"""Caller-provided memory blocks for per-connection state, and pools of them.

Theory of operation
-------------------
libdill's ``*_mem`` functions keep a connection's state in memory the caller owns, so a server
can bound its footprint up front. Here a *state block* is any writable, C-contiguous buffer of
at least the layer's size (``TLS_SIZE`` for TLS). While a layer is attached it holds a
:class:`StateBlock` lease on the first ``size`` bytes:

* a read-only, non-contiguous or too-small buffer is :class:`InvalidArgument` (EINVAL);
* so is a buffer whose bytes overlap a block some live layer already uses: leases are tracked
  by address range, so two non-overlapping slices of one arena are fine and two connections can
  never share state;
* :meth:`StateBlock.release` (called by the layer on close or detach) drops every
  ``memoryview`` the library took, so the owner may reuse or resize the buffer. The library never
  frees user memory.

Block layout (fixed, little-endian; see :data:`STATE_RECORD`)::

    offset  size  field
    0       1     phase        layer-defined state machine value
    1       1     flags        layer-defined direction flags (send done, receive done, broken...)
    2       2     kind         layer id (1 = TLS, 2 = prefix, ...)
    4       4     reserved
    8       8     bytes_in     plaintext bytes delivered to the user
    16      8     bytes_out    plaintext bytes accepted from the user
    24      8     deadline     the deadline of the operation in progress (inf when none)
    32      32    reserved
    64      ...   layer-defined (TLS: reserved, so later versions need no larger TLS_SIZE)

Blocks are small on purpose: many blocks share a page, so an idle connection costs a few hundred
bytes, not a page. Transient buffers (TLS's ciphertext receive buffer) are not per connection:
they are lent for the length of one synchronous step from a free list (see ``_tls``).

:class:`StateBlockPool` carves one anonymous ``mmap`` arena into equal blocks. ``acquire()``
raises :class:`OutOfStateBlocks` (ENOMEM) when every block is leased: that is the admission
control a server wants.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import struct
import threading
import weakref
from collections.abc import Callable
from typing import Final, final

from ._errors import InvalidArgument, InvalidArgumentType, OutOfStateBlocks

__all__ = ["HEADER_SIZE", "STATE_RECORD", "TLS_SIZE", "StateBlock", "StateBlockPool"]

HEADER_SIZE: Final = 64
"""Bytes at the start of every block reserved for the fixed state record."""

TLS_SIZE: Final = 256
"""Minimum size of a TLS layer's memory block: the 64-byte state record and room reserved for
later versions. Sixteen blocks share a 4 KiB page, so a pool of 10,000 costs 2.5 MiB."""

STATE_RECORD: Final = struct.Struct("<BBHIQQd")
"""The fixed-layout part of the state record (phase, flags, kind, reserved, bytes_in,
bytes_out, deadline)."""

# Live leases by start address, and their starts in order. Values are weak: a layer dropped
# without close must not leave its range marked in use once its memory may be reused; stale
# starts are swept lazily. Live ranges never overlap, so sorted by start they are sorted by end
# too, and an overlap test needs only the two neighbours (O(log n) with thousands of
# connections). A lock, because thread-pool code (Trio's run_sync) may build layers too.
_live: weakref.WeakValueDictionary[int, StateBlock] = weakref.WeakValueDictionary()
_starts: list[int] = []
_live_lock = threading.Lock()


def _live_neighbour(index: int) -> StateBlock | None:
    """The lease starting at ``_starts[index]``, sweeping dead entries at that index."""
    while 0 <= index < len(_starts):
        block = _live.get(_starts[index])
        if block is not None:
            return block
        del _starts[index]
    return None


def _register(block: StateBlock) -> bool:
    """Record ``block``'s range; False (nothing recorded) when it overlaps a live one."""
    start, end = block._start, block._start + block.size
    with _live_lock:
        index = bisect.bisect_left(_starts, start)
        after = _live_neighbour(index)
        if after is not None and after._start < end:
            return False
        while index > 0:
            before = _live_neighbour(index - 1)
            if before is not None:
                if before._start + before.size > start:
                    return False
                break
            index -= 1
        _live[start] = block
        bisect.insort(_starts, start)
        return True


def _forget(start: int) -> None:
    with _live_lock:
        _live.pop(start, None)
        index = bisect.bisect_left(_starts, start)
        if index < len(_starts) and _starts[index] == start:
            del _starts[index]


def _address_of(view: memoryview) -> int:
    # from_buffer only succeeds on writable buffers; the ctypes object is dropped at once,
    # so it does not keep an extra export alive.
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@final
class StateBlock:
    """A lease on ``size`` bytes of caller memory, held by one attached layer.

    Layers create these themselves from the ``mem`` argument; you only meet them when using a
    :class:`StateBlockPool` directly::

        pool = StateBlockPool(100)
        block = pool.acquire()          # OutOfStateBlocks once 100 are leased
        tls = await tls_attach_server_mem(s, cert, key, block, deadline=after(10))
        ...
        await tls.aclose()              # the block goes back to the pool

    ``view`` is the leased memory; :meth:`release` gives it back (idempotent).
    """

    __slots__ = ("__weakref__", "_claimed", "_on_release", "_registered", "_start", "size", "view")

    def __init__(
        self,
        mem: object,
        size: int,
        *,
        on_release: Callable[[], None] | None = None,
        _library_owned: bool = False,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < HEADER_SIZE:
            raise InvalidArgument(f"block size must be an int >= {HEADER_SIZE}, not {size!r}")
        try:
            base = memoryview(mem)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentType(
                f"mem must be a writable buffer (bytearray, mmap, memoryview), "
                f"not {type(mem).__name__}"
            ) from None
        try:
            if base.readonly:
                raise InvalidArgument(f"mem is read-only ({type(mem).__name__}); use a bytearray")
            if not base.c_contiguous:
                raise InvalidArgument("mem must be C-contiguous")
            flat = base.cast("B")
            if flat.nbytes < size:
                raise InvalidArgument(f"mem has {flat.nbytes} bytes; this layer needs {size}")
        except BaseException:
            base.release()
            raise
        view = flat[:size]
        flat.release()
        base.release()
        self.view: memoryview | None = view
        self.size = size
        self._start = _address_of(view)
        self._registered = not _library_owned  # nobody else can hold the library's memory
        if self._registered and not _register(self):
            self.view = None
            view.release()
            raise InvalidArgument("mem overlaps a block that a live layer still uses")
        self._on_release = on_release
        self._claimed = False

    @classmethod
    def claim(cls, mem: object, size: int) -> StateBlock:
        """The block a layer will use: ``mem`` itself if it is a lease, else a new lease on it.

        A lease can be claimed by one layer only; a second claim is :class:`InvalidArgument`.
        """
        if isinstance(mem, StateBlock):
            if mem.view is None:
                raise InvalidArgument("this state block was already released")
            if mem._claimed:
                raise InvalidArgument("this state block is in use by a live layer")
            if mem.size < size:
                raise InvalidArgument(f"state block has {mem.size} bytes; this layer needs {size}")
            block = mem
        else:
            block = cls(mem, size)
        block._claimed = True
        return block

    @classmethod
    def allocate(cls, size: int) -> StateBlock:
        """A fresh block of the library's own (the non-``_mem`` attach functions)."""
        block = cls(bytearray(size), size, _library_owned=True)
        block._claimed = True
        return block

    @property
    def released(self) -> bool:
        """True once :meth:`release` ran."""
        return self.view is None

    def release(self) -> None:
        """Drop the lease: forget the address range and release the memoryview."""
        view, self.view = self.view, None
        if view is None:
            return
        if self._registered:
            _forget(self._start)
        view.release()
        if self._on_release is not None:
            self._on_release()

    def __repr__(self) -> str:
        state = "released" if self.view is None else ("claimed" if self._claimed else "free")
        return f"<StateBlock {self.size} bytes at {self._start:#x} {state}>"


@final
class StateBlockPool:
    """``count`` blocks of ``size`` bytes carved from one preallocated arena.

    Give a pool to a layer (``TLSServerLayer(ctx, pool=pool)``) or to a ``TLSListener`` and
    it bounds the number of live connections and their memory: past ``count`` live ones,
    ``acquire()`` raises :class:`OutOfStateBlocks` (ENOMEM), which the listener turns into a
    clean refusal instead of growth.

    >>> pool = StateBlockPool(2000)      # 2000 x TLS_SIZE of address space, touched lazily
    >>> pool.available
    2000
    """

    def __init__(self, count: int, size: int = TLS_SIZE) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgument(f"count must be an int >= 1, not {count!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < HEADER_SIZE:
            raise InvalidArgument(f"size must be an int >= {HEADER_SIZE}, not {size!r}")
        self.count = count
        self.size = size
        self._arena = mmap.mmap(-1, count * size)
        self._free = list(range(count - 1, -1, -1))

    @property
    def available(self) -> int:
        """Blocks that can still be acquired."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """Blocks currently leased."""
        return self.count - len(self._free)

    def acquire(self) -> StateBlock:
        """Lease a free block; :class:`OutOfStateBlocks` (ENOMEM) when none is left."""
        if not self._free:
            raise OutOfStateBlocks(f"all {self.count} state blocks are in use")
        index = self._free.pop()
        offset = index * self.size
        with memoryview(self._arena) as arena:
            return StateBlock(
                arena[offset : offset + self.size],
                self.size,
                on_release=lambda: self._free.append(index),
            )

    def __repr__(self) -> str:
        return f"<StateBlockPool {self.in_use}/{self.count} in use, {self.size} bytes each>"
