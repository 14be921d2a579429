"""The lower half of a TLS stream: ciphertext between OpenSSL and the stream below.

Theory of operation
-------------------
:class:`TLSWire` is the base of :class:`~trio_tlsattach._tls.TLSStream` (read ``_tls`` first)
and owns everything that moves ciphertext:

* **Reading.** ``_pull`` waits for the stream below and ``_take_nowait`` reads what it has now.
  The bytes land in a 64 KiB scratch buffer lent from a free list for that one synchronous step
  (read, then copy into OpenSSL's ``MemoryBIO``), so no connection owns a receive buffer and
  steady-state receiving allocates nothing per record. TLS in TLS nests the step, so each level
  borrows its own buffer. One task at a time waits on the stream below; another one that needs
  the peer's records (a send in a renegotiation, while a receive waits) waits for its read.
* **Yielding before waiting** (``_pull_below``). When the stream below has nothing, a read
  first gives the scheduler a turn and looks again (twice at most: ``_YIELDS``), and only then
  registers a wait. The peer is often a task of this very process (a relay, a proxy, both ends
  of a test), which sends in that turn, and a turn costs less than a wait (an ``epoll_ctl``,
  the wait's bookkeeping, its wake-up): 15 % on 16 KiB transfers in one process. When the
  looks find no whole record (a peer in another process, or one in mid-write), the next
  ``_PROBE_EVERY`` reads wait at once, so a remote peer pays two turns per 17 waits. A passed
  deadline never yields.
* **Counting whole records** (``_feed``). TLS records are a 5-byte header (type, version,
  16-bit length) then the body. Hopping from header to header as ciphertext arrives tells,
  without asking OpenSSL (whose "no" is an exception), how many whole records a read can take,
  and whether a receive that times out stands in the middle of one (which breaks receiving). A
  header with a length TLS does not allow goes to OpenSSL at once, which fails it.
* **Writing** (``_flush``). Whoever makes ciphertext sends *everything* pending in OpenSSL's
  output, with one non-blocking send and no lock when nobody is part-way through a send; a
  remainder that has to wait is sent under ``_wire_lock``, so records leave in the order
  OpenSSL made them even when a receive (a KeyUpdate answer, an alert) and a send both write.
  The one exception to "everything, now": a TLS 1.3 server's session tickets, made as its
  handshake ends, leave at once only if the stream below takes them without waiting, and
  otherwise in front of the next flush (``_send_or_delay``).
* **The state record** in the caller's memory block (``_save_record``): phase, direction flags,
  byte counters.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from typing import Final

import trio

from ._base import AttachedMixin, ByteStream
from ._deadline import FOREVER, waiting
from ._errors import ConnectionBroken, DeadlineExceeded, StackError
from ._mem import STATE_RECORD

__all__ = ["DEFAULT_RECEIVE_SIZE", "SCRATCH_SIZE", "TLSWire"]

DEFAULT_RECEIVE_SIZE: Final = 65536
_LAYER_ID: Final = 1

# Direction flags, as stored in the state record.
_HANDSHOOK: Final = 1
_SEND_DONE: Final = 2
_SEND_BROKEN: Final = 4
_RECV_EOF: Final = 8
_RECV_BROKEN: Final = 16

SCRATCH_SIZE: Final = 64 * 1024
"""Ciphertext taken from the stream below per read: four full TLS records. OpenSSL's
``MemoryBIO`` never gives memory back, so what one read hands it stays allocated for the life of
the connection: a bound here keeps a connection that once moved bulk data cheap when idle, and
a larger read means fewer wake-ups, calls and allocations per MB. Measured (benchmarks/README):
128 KiB cost 100 KB more per idle pair after bulk traffic than trio.SSLStream, 48 KiB cost
40 % more allocations per MB than 64 KiB."""
_YIELDS: Final = 2
"""Turns a read gives the scheduler before it waits (see the module docstring). Trio runs the
tasks of a batch in random order, so a peer task may run after us in the first turn: with one
turn, 64 KiB reads of 16 KiB messages from a task of the same process waited 122 times in 200
messages; with two, never."""
_PROBE_EVERY: Final = 16
"""Reads that wait at once after the yields found nothing, before the next one yields first."""

_FULL_LIMIT: Final = SCRATCH_SIZE - 4  # where the header walk of a full read stops

# Scratch buffers lent for one synchronous step. A list, not one buffer: TLS in TLS nests these
# steps, and threads each running Trio share the list (pop and append are atomic). Its length
# is the deepest nesting seen, not the number of connections.
# A scratch buffer and its views from byte 3 and byte 4 (see _feed), made once.
_Scratch = tuple[memoryview, memoryview, memoryview]

_spare_scratch: list[_Scratch] = []


def _new_scratch() -> _Scratch:
    view = memoryview(bytearray(SCRATCH_SIZE))
    return view, view[3:], view[4:]


_LONGEST_RECORD_HIGH: Final = 0x48
"""The high byte of the longest record length TLS allows (2^14 + 2048, TLS 1.2's ciphertext).
A record whose header says more counts as whole as soon as its header is in (see ``_feed``), so
that OpenSSL sees it at once and fails it with record_overflow, instead of the receive waiting
for up to 64 KiB that a broken or hostile peer may never send."""


class _HopRows(dict[int, tuple[int, ...]]):
    """``rows[byte3][byte4]``: how far the next record header is from one whose length bytes
    are byte3 and byte4 (5 + length), as int objects made once, so that a hop allocates only the
    new position. A row is made when first needed (bulk data needs one: 0x40) and kept for the
    lengths TLS allows, at most 73 rows of 256 ints, about 750 KB, for the process."""

    def __missing__(self, high: int) -> tuple[int, ...]:
        row = tuple((high << 8) + low + 5 for low in range(256))
        if high <= _LONGEST_RECORD_HIGH:
            self[high] = row
        return row


_HOPS: Final = _HopRows()


class TLSWire(AttachedMixin, ByteStream):
    """Ciphertext in and out, and the state record: the base of ``TLSStream``."""

    __slots__ = (
        "_bytes_in", "_bytes_out", "_delayed", "_drained", "_flags", "_incoming", "_outgoing",
        "_pull_done", "_pulling", "_records", "_recv_error", "_send_error", "_skip",
        "_split_header", "_wait_buffer", "_waits_to_probe", "_wire", "_wire_lock",
    )  # fmt: skip

    _wire: ByteStream  # ``_below``, typed: the hot path's isinstance checks cost time
    _incoming: ssl.MemoryBIO
    _outgoing: ssl.MemoryBIO

    def __init__(self) -> None:
        super().__init__()
        self._flags = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._recv_error: tuple[type[StackError], str] | None = None
        self._send_error: str | None = None
        # Made when a send has to wait part-way, dropped when free again (see _flush).
        self._wire_lock: trio.Lock | None = None
        # Ciphertext that goes in front of the next flush (see _send_or_delay).
        self._delayed = b""
        self._wait_buffer: _Scratch | None = None  # for streams below that cannot poll
        # Record tracking of the ciphertext handed to OpenSSL (see _feed): whole records not
        # yet read (an upper bound: a record without application data, e.g. a session ticket,
        # is taken by the read of the next one), bytes still to come of the record in progress,
        # and the first bytes of a header cut by a read.
        self._records = 0
        self._skip = 0
        self._split_header = b""
        self._drained = False  # the last read from below came back short
        # One task at a time waits on the stream below (see _pull); a second one waits for it.
        self._pulling = False
        self._pull_done: trio.Event | None = None  # made only when a second task waits
        # Waits before the next one that yields first (see _pull_below): 0 means yield first.
        self._waits_to_probe = 0

    # --- state record -------------------------------------------------------------------------

    def _save_record(self, deadline: float) -> None:
        view = None if self._block is None else self._block.view
        if view is None:  # released: closed or detached
            return
        STATE_RECORD.pack_into(
            view, 0, int(self._phase), self._flags, _LAYER_ID, 0,
            self._bytes_in, self._bytes_out, float(deadline),
        )  # fmt: skip

    def _set(self, flag: int) -> None:
        self._flags |= flag
        self._save_record(FOREVER)

    def _break_both(self) -> None:
        self._recv_error = (ConnectionBroken, "the TLS connection failed")
        self._send_error = "the TLS connection failed"
        self._set(_SEND_BROKEN | _RECV_BROKEN)

    # --- moving ciphertext --------------------------------------------------------------------

    async def _pull(self, deadline: float, during: str) -> bool:
        """Wait for ciphertext from below into ``_incoming``; False at the stream's end.

        Waits for readability first, then reads without waiting: a drained socket is not asked
        twice (each EAGAIN is an exception, the costliest thing on this path).

        Two tasks can need the peer's records at once: a receive, and a send that found OpenSSL
        in a handshake the peer started (TLS 1.2 renegotiation). The second one waits for the
        first one's read instead of competing for the stream below, then returns True so that
        its caller tries OpenSSL again.
        """
        below = self._wire
        try:
            if self._pulling:
                done = self._pull_done = self._pull_done or trio.Event()
                with waiting(deadline, during):
                    await done.wait()
                return True
            self._pulling = True
            try:
                got = await self._pull_below(below, deadline)
            finally:
                self._pulling = False
                waiting_too, self._pull_done = self._pull_done, None
                if waiting_too is not None:
                    waiting_too.set()
        except (trio.Cancelled, DeadlineExceeded):
            if self._mid_record() and during == "receive":
                self._recv_error = (ConnectionBroken, "a receive was interrupted mid-record")
                self._set(_RECV_BROKEN)
            raise
        except Exception as exc:  # ours, or a foreign stream's own: where it stopped is unknown
            reason = exc.strerror if isinstance(exc, StackError) else repr(exc)
            self._recv_error = (ConnectionBroken, f"the stream below failed: {reason}")
            self._set(_RECV_BROKEN)
            raise
        return bool(got)

    async def _pull_below(self, below: ByteStream, deadline: float) -> int:
        """``_pull``'s read, by the one task waiting on the stream below: the count fed."""
        while True:
            if deadline != math.inf and deadline <= trio.current_time():
                # A passed deadline (IMMEDIATE) fails at the first wait even when bytes are
                # there, and ``_drained`` may be stale (set by the last short read): look once
                # without waiting, so IMMEDIATE does what can be done.
                got = self._take_nowait()
                if got is not None:
                    return got
            elif self._waits_to_probe:
                self._waits_to_probe -= 1
            else:
                # Yield before waiting (see the module docstring): when the peer is a task of
                # this process, its records are here within two turns (Trio runs a batch of
                # tasks in random order: the peer may run after us in the first), and the wait
                # is saved.
                for _ in range(_YIELDS):
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    got = self._take_nowait()
                    if got is not None:
                        break
                if not self._records:  # a peer in mid-write, or none: wait at once for a while
                    self._waits_to_probe = _PROBE_EVERY
                if got is not None:
                    return got
            if not await below._wait_receivable(deadline):
                # This read awaits, so it cannot use a lent buffer: a buffer of its own, kept
                # only while reads come back full (busy).
                own = self._wait_buffer or _new_scratch()
                self._wait_buffer = None
                got = await below._receive_into(own[0], deadline, False)
                self._absorb(got, own)
                if not self._drained:
                    self._wait_buffer = own
                return got
            got = self._take_nowait()
            if got is not None:
                return got

    def _take_nowait(self) -> int | None:
        """Move what the stream below has now into ``_incoming``: the count, None if nothing.

        The ciphertext passes through a lent scratch buffer, held for this synchronous step
        only; a layer below that is TLS too borrows its own.
        """
        lent = _spare_scratch.pop() if _spare_scratch else _new_scratch()
        try:
            got = self._wire._receive_nowait(lent[0])
            if got is None:
                self._drained = True
            else:
                self._absorb(got, lent)
            return got
        finally:
            _spare_scratch.append(lent)

    def _absorb(self, got: int, scratch: _Scratch) -> None:
        """Note whether the read drained the stream below, and feed what it brought."""
        self._drained = got < SCRATCH_SIZE
        if got:
            self._feed(got, scratch[0], scratch[1], scratch[2])  # a *-call makes a tuple

    def _feed(self, count: int, scratch: memoryview, d3: memoryview, d4: memoryview) -> None:
        """Hand the first ``count`` bytes of ``scratch`` to OpenSSL, counting whole records.

        TLS records are a 5-byte header (type, version, 16-bit length) then the body. Hopping
        from header to header tells, without asking OpenSSL (whose "no" is an exception), how
        many whole records a read can take, and whether we stand mid-record. This runs once per
        record received, so each hop is one line that allocates one int, the new position:
        ``_HOPS`` holds the distances as ints made once, and ``d3``/``d4`` are ``scratch`` from
        byte 3 and byte 4, so that ``d3[pos]`` is the header's byte 3 without computing
        ``pos + 3``. A full read (the common case in bulk) slices nothing.
        """
        data = scratch if count == SCRATCH_SIZE else scratch[:count]
        self._incoming.write(data)
        pos = self._skip
        if self._split_header:  # a header cut by the previous read: join it first
            need = 5 - len(self._split_header)
            have = self._split_header + bytes(data[:need])
            if len(have) < 5:
                self._split_header = have
                return
            self._split_header = b""
            pos = need - 5 + _HOPS[have[3]][have[4]]  # where that record ends in this read
            if pos > count and have[3] > _LONGEST_RECORD_HIGH:
                self._records += 1  # too long for TLS: OpenSSL's to refuse now
        if pos > count:  # still inside the record begun earlier
            self._skip = pos - count
            return
        whole = 1 if pos else 0  # the record begun earlier ends in this read
        limit = _FULL_LIMIT if count == SCRATCH_SIZE else count - 4
        header = 0  # where the last header seen starts
        if pos < limit:
            hops = _HOPS
            while pos < limit:
                header = pos
                pos += hops[d3[pos]][d4[pos]]
                whole += 1
        if pos > count:  # the last record is not all in, unless too long for TLS (see above)
            if d3[header] <= _LONGEST_RECORD_HIGH:
                whole -= 1
            self._skip = pos - count
        else:
            self._skip = 0
            if pos < count:
                self._split_header = bytes(data[pos:count])
        self._records += whole

    def _mid_record(self) -> bool:
        """True when part of a record has arrived but not all of it."""
        return bool(self._skip or self._split_header)

    def _take_outgoing(self) -> bytes:
        """Everything to send next, in order: what was delayed, then what OpenSSL made since."""
        data = self._outgoing.read()
        if self._delayed:
            data, self._delayed = self._delayed + data, b""
        return data

    def _send_or_delay(self) -> None:
        """Send what OpenSSL made if the stream below takes it without waiting; keep the rest
        for the front of the next flush.

        For a TLS 1.3 server's session tickets, which OpenSSL makes as its handshake ends: the
        client's handshake is already over, so it may not read until it has sent something,
        and a server waiting to hand the tickets over a stream without a buffer (a pipe that
        is full, a lockstep test stream) would wait for ever (trio issue #819). trio.SSLStream
        always delays them; sending now when the socket has room lets a client that only
        reads have them for its next connection. But when the client's first records are
        already here (a request sent right behind its Finished), an answer or a close is
        coming: the tickets ride with it, one system call (and segment) fewer per connection.
        """
        data = self._take_outgoing()
        sent = 0
        if data and self._wire_lock is None and not self._incoming.pending:
            with contextlib.suppress(StackError):  # the next read or flush meets it and tells
                # A fresh look: the request may have come while OpenSSL finished the handshake
                # (a client sends it right behind its Finished, often in a segment of its own).
                self._take_nowait()
                if not self._incoming.pending:
                    sent = self._wire._send_nowait(data)
        self._delayed = data[sent:]

    async def _flush(self, deadline: float) -> None:
        """Send everything OpenSSL has produced, in order (see the module docstring).

        What the stream below accepts without waiting leaves at once; only a remainder waits.
        """
        outgoing = self._outgoing
        if not outgoing.pending:
            return
        below = self._wire
        lock = self._wire_lock
        if lock is not None:  # another task is part-way through sending: queue behind it
            await lock.acquire()
        try:
            if lock is None:
                # Nobody is mid-send and nothing is awaited before the bytes are handed below,
                # so no other task's records can overtake ours: no lock needed.
                data = self._take_outgoing()
                sent = below._send_nowait(data)
                if sent == len(data):
                    return
                lock = self._wire_lock = trio.Lock()
                lock.acquire_nowait()
                rest = memoryview(data)[sent:]
            else:
                rest = memoryview(self._take_outgoing())  # whatever was made while we waited
            if rest:
                await below._send_all(rest, deadline, False)
        except BaseException:
            self._send_error = "a send was interrupted after TLS records were produced"
            self._set(_SEND_BROKEN)
            raise
        finally:
            if lock is not None:
                self._release_wire(lock)

    def _release_wire(self, lock: trio.Lock) -> None:
        lock.release()
        if not lock.locked():  # nobody queued behind us: back to the lock-free state
            self._wire_lock = None

    async def _wait_wire_writable(self) -> None:
        """``wait_send_all_might_not_block`` on the stream below, in turn with flushes.

        A receive may be flushing at the same time (handshake records, a KeyUpdate answer),
        and the stream below lets one task at a time wait for room, so this queues behind it
        as a flush would.
        """
        lock = self._wire_lock
        if lock is None:
            lock = self._wire_lock = trio.Lock()
            lock.acquire_nowait()
        else:
            await lock.acquire()
        try:
            await self._wire._wait_send_all_might_not_block()
        finally:
            self._release_wire(lock)

    async def _flush_on_close(self) -> None:
        """Best effort: hand a last word (alert, close_notify) below without waiting long."""
        data = self._take_outgoing()
        if data and self._wire_lock is None:  # else a send is part-way: do not cut into it
            await self._wire._send_on_close(data)
