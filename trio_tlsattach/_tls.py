"""The TLS layer: ``tls_attach_server_mem`` and friends, on any byte stream.

Theory of operation
-------------------
On the wire this layer is plain TLS (1.2 or 1.3), done by OpenSSL through an ``ssl.SSLObject``
and two ``ssl.MemoryBIO``: ciphertext from the stream below is written into ``_incoming``,
OpenSSL's output is drained from ``_outgoing`` and sent below. The stream below is used only
through the byte-stream interface, so TLS can sit on a socket, a pipe, a memory stream or
another TLS layer (TLS in TLS).

Memory. The caller's block (at least ``TLS_SIZE`` bytes, see ``_mem``) holds the fixed state
record (phase, direction flags, byte counters, current deadline). Nothing else is per connection
but OpenSSL's objects and a few small Python ones: an idle connection should cost less than one
on ``trio.SSLStream``. Ciphertext read from below lands in a 128 KiB *scratch buffer* lent from a
free list for one synchronous step (read, then copy into ``_incoming``) and given back before any
await, so steady-state receiving allocates nothing per record and a thousand idle connections
share one buffer. TLS in TLS nests those steps, so each level borrows its own. Streams below that
cannot be polled (memory streams, a TLS layer) are read with an await, into a per-connection
buffer made on first use. The locks (handshake, wire) are also made only when two tasks meet.

The fast path (why this beats ``trio.SSLStream``). A receive first decrypts every whole record
already buffered *straight into the caller's buffer* (``SSLObject.read(n, buffer)``); while the
caller's buffer is not full it pulls more ciphertext from the stream below *without waiting*
(``_receive_nowait``) and decrypts again. Only when nothing at all is available does it wait,
and then the deadline's scope is built. One user call is one scheduler round trip, however many
16 KiB records it moves. Whether OpenSSL has a whole record to decrypt is known without asking
it (its "no" is an exception) by hopping over record headers as ciphertext arrives (``_feed``).
A send encrypts up to ``SEND_CHUNK`` bytes with one ``SSLObject.write`` and hands the ciphertext
below with one non-blocking send (``_send_nowait``); only a remainder waits.

States. ``_handshook`` (handshake done), and per direction: send ``done`` (close_notify sent:
``SendAfterDone`` after), send ``broken`` (a send was interrupted after OpenSSL had produced
records, so the peer is mid-record: sticky ``ConnectionBroken``), receive ``eof`` (the peer's
close_notify: receives return ``b""``), receive ``broken`` (an alert, a bad record, EOF without
close_notify, or a receive interrupted in the middle of a record). A receive that was only
waiting (nothing partial buffered) may be cancelled or time out and the stream stays usable.

Full duplex. One task may send while another receives. Both can produce ciphertext (a receive
can make OpenSSL answer a KeyUpdate or send an alert), so whoever sends ciphertext drains
*everything* pending in ``_outgoing``, and a sender that has to wait part-way holds
``_wire_lock`` until done: records leave in the order OpenSSL made them. Two tasks sending at
once is ``trio.BusyResourceError``.

``send_eof`` (libdill's ``tls_done``) sends close_notify and leaves receiving open: TLS 1.3
half-close. ``detach`` (``tls_detach``) sends close_notify if needed, reads until the peer's
close_notify and returns the stream below with every byte that followed that close_notify
pushed back in front of it. Application data the peer sent before its close_notify and that
was not read is *not* merged into the plaintext stream below (that would let bytes cross the
security boundary, the STARTTLS-injection mistake): it is kept in :attr:`TLSStream.unread_data`.
"""

from __future__ import annotations

import contextlib
import math
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, final

import trio
import trustme

from ._base import (
    AttachedMixin,
    ByteStream,
    ConflictDetector,
    Handle,
    Kind,
    TLSAttribute,
    TypedAttribute,
    as_writable_view,
    check_max_bytes,
    close_shielded,
)
from ._deadline import FOREVER, check_deadline
from ._errors import (
    ConnectionBroken,
    DeadlineExceeded,
    InvalidArgument,
    NotSupported,
    ProtocolMismatch,
    SendAfterDone,
    StackError,
    TLSError,
)
from ._mem import STATE_RECORD, TLS_SIZE, StateBlock, StateBlockPool
from ._tlsconfig import CertSource, client_context, server_context
from ._transports import begin_attach, bytes_view, wrap_stream

__all__ = [
    "TLSClientLayer",
    "TLSServerLayer",
    "TLSStream",
    "tls_attach_client",
    "tls_attach_client_mem",
    "tls_attach_server",
    "tls_attach_server_mem",
    "tls_detach",
    "tls_done",
]

SEND_CHUNK: Final = 256 * 1024
"""Plaintext encrypted per ``SSLObject.write``: bounds the ciphertext held in memory."""

DEFAULT_RECEIVE_SIZE: Final = 65536
_LAYER_ID: Final = 1

_L = TypeVar("_L", "TLSServerLayer", "TLSClientLayer")

# Direction flags, as stored in the state record.
_HANDSHOOK: Final = 1
_SEND_DONE: Final = 2
_SEND_BROKEN: Final = 4
_RECV_EOF: Final = 8
_RECV_BROKEN: Final = 16


SCRATCH_SIZE: Final = 128 * 1024
"""Ciphertext taken from the stream below per read: eight full TLS records, so one read takes
in all the records of a 64 KiB write and a wake-up drains most of a socket buffer at once."""

# Scratch buffers lent for one synchronous step (see "Memory"). A list, not one buffer: TLS in
# TLS nests these steps, and threads each running Trio share the list (pop and append are
# atomic). Its length is the deepest nesting seen, not the number of connections.
_spare_scratch: list[memoryview] = []

_HOP: Final = tuple((high << 8) + 5 for high in range(256))
"""Indexed by a record header's byte 3: the header's length plus the high byte of the body's."""


def _record_sni(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    # The server side learns the client's SNI only through this callback.
    sslobj.tlsattach_sni = server_name


@final
class TLSStream(AttachedMixin, ByteStream):
    """A TLS connection on top of a byte stream: what the TLS layers' ``attach`` returns.

    A :class:`trio.abc.HalfCloseableStream` with absolute ``deadline`` arguments,
    :meth:`receive_into`, :meth:`detach`, and ``trio.SSLStream``'s names, so it also works as a
    drop-in::

        tls = TLSStream(transport, ctx, server_side=True)   # handshake happens on first use
        await tls.do_handshake()
        data = await tls.receive_some()

    Build it through a layer to get libdill's attach semantics (handshake done, stream closed
    on failure)::

        tls = await TLSServerLayer("cert.pem", "key.pem").attach(tcp, deadline=after(10))
    """

    __slots__ = (
        "_bytes_in", "_bytes_out", "_context", "_drained", "_flags", "_handshake_lock",
        "_https_compatible", "_incoming", "_outgoing", "_raw", "_receive_buffer",
        "_receive_conflict", "_records", "_recv_error", "_send_conflict", "_send_error",
        "_server_side", "_session_sink", "_skip", "_split_header", "_ssl", "_wait_buffer",
        "_wire", "_wire_lock", "unread_data",
    )  # fmt: skip

    def __init__(
        self,
        transport_stream: Any,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        https_compatible: bool = False,
        mem: object = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        super().__init__()
        below = wrap_stream(transport_stream)
        if below.kind is not Kind.BYTES:
            raise ProtocolMismatch(f"TLS needs a byte stream; {below.label()} carries messages")
        assert isinstance(below, ByteStream)
        self._wire = below  # ``_below``, typed: the hot path's isinstance checks cost time
        if not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgument("ssl_context must be an ssl.SSLContext")
        block = StateBlock.allocate(TLS_SIZE) if mem is None else StateBlock.claim(mem, TLS_SIZE)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if server_side and ssl_context.sni_callback is None:
            ssl_context.sni_callback = _record_sni
        try:
            self._ssl = ssl_context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=server_side,
                server_hostname=server_hostname,
                session=session,
            )
        except (ValueError, ssl.SSLError) as exc:
            block.release()
            raise InvalidArgument(f"cannot start TLS: {exc}") from exc
        self._bind(below, block)
        self._context = ssl_context
        self._server_side = server_side
        self._https_compatible = https_compatible
        self._flags = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._recv_error: tuple[type[StackError], str] | None = None
        self._send_error: str | None = None
        # Made when first needed and dropped when free again: most connections never need
        # them, and an idle connection should cost little (see "Memory").
        self._handshake_lock: trio.Lock | None = None
        self._wire_lock: trio.Lock | None = None
        self._wait_buffer: memoryview | None = None  # for streams below that cannot poll
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )
        self._receive_buffer: bytearray | None = None
        self._session_sink: Callable[[ssl.SSLSession], None] | None = None
        # The C object under ``SSLObject``'s Python wrappers, whose methods are called once per
        # record: the wrapper's frame costs as much as a small record's decryption. Same
        # semantics. (Bound methods are taken per call, not kept: 72 bytes each per connection.)
        self._raw: Any = getattr(self._ssl, "_sslobj", self._ssl)
        # Record tracking of the ciphertext handed to OpenSSL (see _feed): whole records not
        # yet read (an upper bound: a record without application data, e.g. a session ticket,
        # is taken by the read of the next one), bytes still to come of the record in progress,
        # and the first bytes of a header cut by a read.
        self._records = 0
        self._skip = 0
        self._split_header = b""
        self._drained = False  # the last read from below came back short
        self.unread_data = b""
        """Application data the peer sent before its close_notify that was still unread when
        :meth:`detach` ran (it is not merged into the plaintext stream below)."""
        self._save_record(FOREVER)

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

    # --- properties and typed attributes (trio.SSLStream's names) ----------------------------

    def label(self) -> str:
        side = "server" if self._server_side else "client"
        return f"tls({side}, {self._ssl.version() or 'handshaking'})"

    @property
    def transport_stream(self) -> Handle:
        """The stream below (do not use it while TLS is attached)."""
        return self._below

    @property
    def context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` this connection was made from."""
        return self._context

    @property
    def server_side(self) -> bool:
        """True for the server end."""
        return self._server_side

    @property
    def server_hostname(self) -> str | None:
        """The client's SNI name on the server side; the expected hostname on the client side."""
        if self._server_side:
            return getattr(self._ssl, "tlsattach_sni", None)
        return self._ssl.server_hostname

    @property
    def tls_version(self) -> str | None:
        """``"TLSv1.3"``, ``"TLSv1.2"``, or None before the handshake."""
        return self._ssl.version()

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol, or None."""
        return self._ssl.selected_alpn_protocol()

    @property
    def peer_cert(self) -> dict[str, Any] | None:
        """The peer's verified certificate as ``getpeercert()`` gives it, or None."""
        return self._ssl.getpeercert() or None

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, to resume it with ``TLSClientLayer(..., session=...)``."""
        return self._ssl.session

    @property
    def session_reused(self) -> bool:
        """True when this connection resumed an earlier session."""
        return self._ssl.session_reused

    def getpeercert(self, binary_form: bool = False) -> Any:
        """As ``ssl.SSLObject.getpeercert``."""
        return self._ssl.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        """As ``ssl.SSLObject.selected_alpn_protocol``."""
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        """As ``ssl.SSLObject.version``."""
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        """As ``ssl.SSLObject.cipher``: (name, protocol, secret bits)."""
        return self._ssl.cipher()

    def _attributes(self) -> Mapping[TypedAttribute[Any], Any]:
        return {
            TLSAttribute.tls_version: self._ssl.version,
            TLSAttribute.cipher: self._ssl.cipher,
            TLSAttribute.alpn: self._ssl.selected_alpn_protocol,
            TLSAttribute.peer_cert: lambda: self.peer_cert,
            TLSAttribute.peer_cert_der: lambda: self._ssl.getpeercert(True),
            TLSAttribute.server_hostname: lambda: self.server_hostname,
            TLSAttribute.server_side: lambda: self._server_side,
            TLSAttribute.session_reused: lambda: self._ssl.session_reused,
        }

    # --- handshake ----------------------------------------------------------------------------

    async def do_handshake(self, deadline: float = FOREVER) -> None:
        """Run the handshake now (it otherwise runs on first send or receive). Idempotent."""
        self._check()
        checked = check_deadline(deadline)
        if self._flags & _HANDSHOOK:
            await trio.lowlevel.checkpoint()
            return
        await self._handshake(checked)

    async def _handshake(self, deadline: float) -> None:
        if self._flags & _HANDSHOOK:
            return
        lock = self._handshake_lock
        if lock is None:  # the first task here; others queue on it
            lock = self._handshake_lock = trio.Lock()
        async with lock:
            while not self._flags & _HANDSHOOK:
                try:
                    self._ssl.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    self._break_both()
                    await self._flush_on_close()  # our alert tells the peer why
                    raise TLSError.from_ssl(exc, "handshake failed") from exc
                await self._flush(deadline)
                if done:
                    self._set(_HANDSHOOK)
                    self._handshake_lock = None  # tasks waiting on it hold their own reference
                    if self._ssl.version() != "TLSv1.3":  # 1.3 tickets come later
                        self._keep_session()
                    break
                if not await self._pull(deadline, during="handshake"):
                    self._break_both()
                    raise ConnectionBroken("the peer closed the connection during the handshake")

    def _break_both(self) -> None:
        self._recv_error = (ConnectionBroken, "the TLS connection failed")
        self._send_error = "the TLS connection failed"
        self._set(_SEND_BROKEN | _RECV_BROKEN)

    # --- moving ciphertext --------------------------------------------------------------------

    async def _pull(self, deadline: float, during: str) -> bool:
        """Wait for ciphertext from below into ``_incoming``; False at the stream's end.

        Waits for readability first, then reads without waiting: a drained socket is not asked
        twice (each EAGAIN is an exception, the costliest thing on this path).
        """
        below = self._wire
        try:
            while True:
                if deadline != math.inf and deadline <= trio.current_time():
                    # A passed deadline (IMMEDIATE) fails at the first wait even when bytes
                    # are there, and ``_drained`` may be stale (set by the last short read):
                    # look once without waiting, so IMMEDIATE does what can be done.
                    got = self._take_nowait()
                    if got is not None:
                        break
                if not await below._wait_receivable(deadline):
                    buffer = self._wait_buffer or memoryview(bytearray(DEFAULT_RECEIVE_SIZE))
                    self._wait_buffer = None  # as in _receive_some: kept only while busy
                    got = await below._receive_into(buffer, deadline, False)
                    self._drained = got < len(buffer)
                    if got:
                        self._feed(buffer, got)
                    if not self._drained:
                        self._wait_buffer = buffer
                    break
                got = self._take_nowait()
                if got is not None:
                    break
        except (trio.Cancelled, DeadlineExceeded):
            if self._mid_record() and during == "receive":
                self._recv_error = (ConnectionBroken, "a receive was interrupted mid-record")
                self._set(_RECV_BROKEN)
            raise
        except StackError as exc:
            self._recv_error = (ConnectionBroken, f"the stream below failed: {exc.strerror}")
            self._set(_RECV_BROKEN)
            raise
        return bool(got)

    def _take_nowait(self) -> int | None:
        """Move what the stream below has now into ``_incoming``: the count, None if nothing.

        The ciphertext passes through a lent scratch buffer (see "Memory"), held for this
        synchronous step only; a layer below that is TLS too borrows its own.
        """
        scratch = _spare_scratch.pop() if _spare_scratch else memoryview(bytearray(SCRATCH_SIZE))
        try:
            got = self._wire._receive_nowait(scratch)
            if got is None:
                self._drained = True
            else:
                self._drained = got < SCRATCH_SIZE
                if got:
                    self._feed(scratch, got)
            return got
        finally:
            _spare_scratch.append(scratch)

    def _feed(self, scratch: memoryview, count: int) -> None:
        """Hand the first ``count`` bytes of ``scratch`` to OpenSSL, counting whole records.

        TLS records are a 5-byte header (type, version, 16-bit length) then the body. Hopping
        from header to header tells, without asking OpenSSL (whose "no" is an exception), how
        many whole records a read can take, and whether we stand mid-record. This runs once per
        record received, so each hop is one line that allocates two ints: ``_HOP`` holds byte 3
        of a header already shifted and plus 5, and the views ``d3``/``d4`` start 3 and 4 bytes
        in, so that ``d3[pos]`` is the header's byte 3 without computing ``pos + 3``.
        """
        data = scratch[:count]
        self._incoming.write(data)
        pos = self._skip
        if self._split_header:  # a header cut by the previous read: join it first
            need = 5 - len(self._split_header)
            have = self._split_header + bytes(data[:need])
            if len(have) < 5:
                self._split_header = have
                return
            self._split_header = b""
            pos = need + ((have[3] << 8) | have[4])  # where that record ends in this read
        if pos > count:  # still inside the record begun earlier
            self._skip = pos - count
            return
        whole = 1 if pos else 0  # the record begun earlier ends in this read
        limit = count - 4
        if pos < limit:
            d3 = scratch[3:]
            d4 = scratch[4:]
            hop = _HOP
            while pos < limit:
                pos = pos + hop[d3[pos]] + d4[pos]
                whole += 1
        if pos > count:
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

    async def _flush(self, deadline: float) -> None:
        """Send everything OpenSSL has produced, in order (see "Full duplex").

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
                data = outgoing.read()
                sent = below._send_nowait(data)
                if sent == len(data):
                    return
                lock = self._wire_lock = trio.Lock()
                lock.acquire_nowait()
                rest = memoryview(data)[sent:]
            else:
                rest = memoryview(outgoing.read())  # whatever was made while we waited
            if rest:
                await below._send_all(rest, deadline, False)
        except BaseException:
            self._send_error = "a send was interrupted after TLS records were produced"
            self._set(_SEND_BROKEN)
            raise
        finally:
            if lock is not None:
                lock.release()
                if not lock.locked():  # nobody queued behind us: back to the lock-free state
                    self._wire_lock = None

    async def _flush_on_close(self) -> None:
        """Best effort: hand a last word (alert, close_notify) below without waiting long."""
        data = self._outgoing.read()
        if data and self._wire_lock is None:  # else a send is part-way: do not cut into it
            await self._wire._send_on_close(data)

    # --- send side ----------------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._flags & _SEND_DONE:
            raise SendAfterDone("send after send_eof() / tls_done()")
        if self._send_error is not None:
            raise ConnectionBroken(self._send_error)

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            self._check_send()
            with bytes_view(data) as view:
                if checkpoint:
                    await trio.lowlevel.checkpoint_if_cancelled()
                if not self._flags & _HANDSHOOK:
                    await self._handshake(checked)
                    self._check_send()
                write = self._raw.write
                size = len(view)
                start = 0
                while start < size:
                    try:
                        write(view if size <= SEND_CHUNK else view[start : start + SEND_CHUNK])
                    except ssl.SSLError as exc:
                        self._send_error = f"TLS error while sending: {exc.reason}"
                        self._set(_SEND_BROKEN)
                        raise TLSError.from_ssl(exc, "send failed") from exc
                    await self._flush(checked)
                    start += SEND_CHUNK
                self._bytes_out += size
            if checkpoint:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            self._check_send()
            await self._wire._wait_send_all_might_not_block()

    # --- receive side -------------------------------------------------------------------------

    def _raise_receive_error(self) -> None:
        assert self._recv_error is not None
        cls, message = self._recv_error
        raise cls(message)

    def _fill(self, view: memoryview) -> int | None:
        """Decrypt into ``view`` all that is available without waiting.

        Returns the count (0 only at the peer's close_notify), or None when nothing at all
        could be had. An error after some bytes were delivered is kept for the next call.
        """
        rest = view  # the part of the caller's buffer still empty
        raw = self._raw
        read = raw.read
        plaintext_pending = raw.pending
        while True:
            try:
                # Only call into OpenSSL when it has plaintext or a whole record: its "want
                # more" is an exception, which costs more than decrypting a small record.
                while rest:
                    if not plaintext_pending():
                        if not self._records:
                            break
                        self._records -= 1
                    n = read(0, rest)  # 0: as much as fits in ``rest``
                    if not n:
                        self._set(_RECV_EOF)
                        return len(view) - len(rest)
                    rest = rest[n:]
                if not rest:
                    return len(view)
            except ssl.SSLWantReadError:
                # The count was high: a record without application data (e.g. a session
                # ticket) went with the read of the next one.
                self._records = 0
            except ssl.SSLZeroReturnError:
                self._set(_RECV_EOF)
                return len(view) - len(rest)
            except ssl.SSLError as exc:
                self._recv_error = (TLSError, f"bad record or alert: {exc.reason or exc}")
                self._set(_RECV_BROKEN)
                if len(rest) < len(view):
                    return len(view) - len(rest)
                raise TLSError.from_ssl(exc, "receive failed") from exc
            filled = len(view) - len(rest)
            if self._drained:  # the last read was short: the socket is empty, do not ask again
                return filled or None
            got = self._take_nowait()
            if got is None:
                return filled or None
            if not got:
                self._transport_eof()
                return filled or (0 if self._flags & _RECV_EOF else None)

    def _transport_eof(self) -> None:
        if self._mid_record():
            self._recv_error = (ConnectionBroken, "the stream ended in the middle of a TLS record")
        elif self._https_compatible:
            self._set(_RECV_EOF)
            return
        else:
            self._recv_error = (ConnectionBroken, "the peer closed without close_notify")
        self._set(_RECV_BROKEN)

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        view = as_writable_view(buffer)
        checked = check_deadline(deadline)
        with self._receive_conflict:
            if checkpoint:
                await trio.lowlevel.checkpoint_if_cancelled()
            if self._pushback:
                n = self._take_pushback_into(view)
                if checkpoint:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return n
            if not self._flags & _HANDSHOOK:
                await self._handshake(checked)
            waited = False
            while True:
                if self._flags & _RECV_EOF:
                    n = 0
                    break
                if self._recv_error is not None:
                    self._raise_receive_error()
                try:
                    got = self._fill(view)
                except TLSError:
                    await self._flush_on_close()  # the alert OpenSSL queued for the peer
                    raise
                if self._outgoing.pending:
                    await self._flush(checked)
                if got is not None:
                    n = got
                    break
                waited = True
                if not await self._pull(checked, during="receive"):
                    self._transport_eof()
            self._bytes_in += n
            if checkpoint and not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return n

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        buffer = self._receive_buffer
        if buffer is None or len(buffer) < size:
            buffer = bytearray(size)
        self._receive_buffer = None  # while it is ours, in case another task calls too
        with memoryview(buffer)[:size] as view:
            n = await self._receive_into(view, deadline)
            data = bytes(view[:n])
        # A full read says more is coming: keep the buffer. A short one says the stream is
        # drained, maybe idle for long: do not hold 64 KiB per idle connection.
        if n == size:
            self._receive_buffer = buffer
        return data

    def _receive_nowait(self, view: memoryview) -> int | None:
        if self._pushback:
            return self._take_pushback_into(view)
        if not self._flags & _HANDSHOOK or self._outgoing.pending:
            return None  # the waiting path handshakes and flushes
        if self._flags & _RECV_EOF:
            return 0
        if self._recv_error is not None:
            self._raise_receive_error()
        return self._fill(view)

    # --- done (send_eof) ----------------------------------------------------------------------

    def _start_shutdown(self) -> None:
        """Queue close_notify without letting OpenSSL discard unread application data.

        ``SSLObject.unwrap`` calls ``SSL_shutdown`` twice, and the second call drops application
        data it reads. So decrypted-but-unread bytes go to our pushback first, and undecrypted
        ciphertext is kept out of OpenSSL's reach while it runs.
        """
        while self._ssl.pending():
            self._pushback.extend(self._ssl.read(self._ssl.pending()))
        saved = self._incoming.read()
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self._send_error = "TLS shutdown failed"
            self._set(_SEND_BROKEN)
            raise TLSError.from_ssl(exc, "close_notify failed") from exc
        finally:
            if saved:
                self._incoming.write(saved)
        self._set(_SEND_DONE)

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            if self._flags & _SEND_DONE:
                await trio.lowlevel.checkpoint()
                return
            if self._send_error is not None:
                raise ConnectionBroken(self._send_error)
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._flags & _HANDSHOOK:
                await self._handshake(checked)
            self._start_shutdown()
            await self._flush(checked)
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_eof(self, deadline: float = FOREVER) -> None:
        """Send close_notify (libdill's ``tls_done``); later sends raise :class:`SendAfterDone`.

        Receiving keeps working until the peer's close_notify, when receives return ``b""``.
        The stream below is not half-closed, so the connection can still be detached.
        """
        await super().send_eof(deadline)

    # --- detach -------------------------------------------------------------------------------

    async def detach(self, deadline: float = FOREVER) -> Handle:
        """Shut TLS down cleanly and return the stream below (libdill's ``tls_detach``).

        Sends close_notify if not done yet, reads until the peer's close_notify, and returns the
        stream below with every byte that followed the peer's close_notify pushed back in front.
        Unread application data is kept in :attr:`unread_data`. On any failure (deadline,
        cancellation, EOF without close_notify) the whole stack is closed and the error raised.
        """
        return await self._detach_handle(deadline)

    async def _detach_protocol(self, deadline: float) -> bytes:
        checked = check_deadline(deadline)
        with self._send_conflict, self._receive_conflict:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._flags & _HANDSHOOK:
                await self._handshake(checked)
            if not self._flags & _SEND_DONE:
                if self._send_error is not None:
                    raise ConnectionBroken(self._send_error)
                self._start_shutdown()
            await self._flush(checked)
            unread = bytearray(self._pushback)
            self._pushback.clear()
            buffer = bytearray(DEFAULT_RECEIVE_SIZE)
            with memoryview(buffer) as view:
                while not self._flags & _RECV_EOF:
                    if self._recv_error is not None:
                        self._raise_receive_error()
                    got = self._fill(view)
                    if got:
                        unread += view[:got]
                    elif got is None and not await self._pull(checked, during="detach"):
                        self._transport_eof()
                        if self._https_compatible:
                            raise ConnectionBroken("the peer closed without close_notify")
            self.unread_data = bytes(unread)
            self._keep_session()
            return self._incoming.read()

    async def unwrap(self) -> tuple[Any, bytes]:
        """``trio.SSLStream.unwrap``: detach, and return ``(transport, trailing_bytes)``.

        Unlike :meth:`detach`, the bytes that followed the peer's close_notify are returned
        instead of pushed back. A wrapped foreign stream is returned as the original object.
        """
        below = await self.detach()
        assert isinstance(below, ByteStream)
        trailing = bytes(below._pushback)
        below._pushback.clear()
        inner = getattr(below, "stream", None)
        return (inner if isinstance(inner, trio.abc.Stream) else below), trailing

    # --- close --------------------------------------------------------------------------------

    def _keep_session(self) -> None:
        """Hand a new resumable session to the client layer's cache (see TLSClientLayer).

        A resumed connection keeps the cache as it is: CPython's ``SSLObject.session`` copies the
        session through DER on every access (about as costly as a quarter of a handshake), and
        OpenSSL servers accept a TLS 1.3 ticket more than once, so the cache is refreshed only
        after a full handshake (or when the server stopped accepting the old session).
        """
        sink, self._session_sink = self._session_sink, None
        if sink is None or self._ssl.session_reused:
            return
        session = self._ssl.session
        if session is not None and (session.has_ticket or self._ssl.version() != "TLSv1.3"):
            sink(session)

    def _absorb_tickets(self) -> None:
        """On close: process records already here, so a TLS 1.3 ticket is not thrown away.

        Application data read here is discarded: the stream is being closed.
        """
        if self._session_sink is None:
            return
        if self._recv_error is None and not self._ssl.session_reused:
            self._drained = False  # the ticket may have arrived since the last read: look
            with contextlib.suppress(StackError, ssl.SSLError), memoryview(bytearray(4096)) as view:
                for _ in range(8):
                    if not self._fill(view):
                        break
        self._keep_session()

    async def _close_resources(self) -> None:
        # Forceful, but a peer that can still hear us gets a close_notify if it fits now.
        try:
            if self._flags & _HANDSHOOK and not self._server_side:
                self._absorb_tickets()
            if self._flags & _HANDSHOOK and not self._flags & (_SEND_DONE | _SEND_BROKEN):
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()
                await self._flush_on_close()
        finally:  # even when cancelled: closing must close
            await super()._close_resources()


# --- layers -----------------------------------------------------------------------------------


def _claim_block(mem: object, pool: StateBlockPool | None) -> object:
    if mem is not None and pool is not None:
        raise InvalidArgument("give a layer mem or pool, not both")
    return pool.acquire() if pool is not None else mem


async def _attach(
    stream: Any,
    context: ssl.SSLContext,
    deadline: float,
    *,
    server_side: bool,
    server_hostname: str | None,
    mem: object,
    pool: StateBlockPool | None,
    session: ssl.SSLSession | None,
    session_sink: Callable[[ssl.SSLSession], None] | None = None,
) -> TLSStream:
    below = await begin_attach(stream, Kind.BYTES, "tls")
    try:
        checked = check_deadline(deadline)
        tls = TLSStream(
            below,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            mem=_claim_block(mem, pool),
            session=session,
        )
        tls._session_sink = session_sink
    except BaseException:
        await close_shielded(below)
        raise
    try:
        await tls._handshake(checked)
    except BaseException:
        await close_shielded(tls)
        raise
    return tls


@final
class TLSServerLayer:
    """Server-side TLS, ready to attach to byte streams (one recipe, many connections).

    ``cert`` is an ``ssl.SSLContext``, a PEM file path (with ``key``, or a file holding both),
    PEM bytes, or a ``trustme.LeafCert``. Contexts built here are cached and require TLS 1.2+.

    ``mem``: a block of at least ``TLS_SIZE`` bytes for *one* connection's state;
    ``pool``: a :class:`StateBlockPool` to take a block from per connection (ENOMEM when empty).

    >>> layer = TLSServerLayer(server_cert)            # a trustme.LeafCert
    >>> tls = await layer.attach(tcp, deadline=after(10))
    """

    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        cert: CertSource,
        key: str | bytes | os.PathLike[str] | None = None,
        *,
        mem: object = None,
        pool: StateBlockPool | None = None,
        alpn: Sequence[str] | None = None,
    ) -> None:
        if mem is not None and pool is not None:
            raise InvalidArgument("give a layer mem or pool, not both")
        self.context = server_context(cert, key, alpn)
        self._mem = mem
        self._pool = pool

    async def attach(self, stream: Any, deadline: float = FOREVER) -> TLSStream:
        """Run the server handshake on ``stream``; on failure ``stream`` is closed."""
        return await _attach(
            stream, self.context, deadline, server_side=True, server_hostname=None,
            mem=self._mem, pool=self._pool, session=None,
        )  # fmt: skip

    def __repr__(self) -> str:
        return "<TLSServerLayer>"


@final
class TLSClientLayer:
    """Client-side TLS, ready to attach to byte streams.

    ``context``: an ``ssl.SSLContext``; a ``trustme.CA`` or CA file to trust; or None for the
    system's CAs. The server's certificate and ``server_hostname`` are verified unless your
    own context says otherwise. ``session`` resumes an earlier ``TLSStream.session``.

    ``session_cache`` (on by default): the layer remembers the last resumable session its
    connections got and offers it on the next ``attach``, so reusing one layer object for many
    connections to the same server makes later handshakes resumptions (no certificate
    exchange, a fraction of the CPU). TLS 1.3 tickets arrive after the handshake; a connection
    hands its session to the cache when it is detached or closed. ``session=`` takes precedence.
    """

    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        context: ssl.SSLContext | trustme.CA | str | os.PathLike[str] | None = None,
        *,
        server_hostname: str | None = None,
        mem: object = None,
        pool: StateBlockPool | None = None,
        alpn: Sequence[str] | None = None,
        session: ssl.SSLSession | None = None,
        session_cache: bool = True,
    ) -> None:
        if mem is not None and pool is not None:
            raise InvalidArgument("give a layer mem or pool, not both")
        self.context = client_context(context, alpn)
        self.session_cache = session_cache
        self.cached_session: ssl.SSLSession | None = None
        """The session the next ``attach`` offers when ``session`` is not given."""
        if server_hostname is None and self.context.check_hostname:
            raise InvalidArgument("server_hostname is required when the context checks hostnames")
        self.server_hostname = server_hostname
        self.session = session
        self._mem = mem
        self._pool = pool

    async def attach(self, stream: Any, deadline: float = FOREVER) -> TLSStream:
        """Run the client handshake on ``stream``; on failure ``stream`` is closed."""
        return await _attach(
            stream, self.context, deadline, server_side=False,
            server_hostname=self.server_hostname, mem=self._mem, pool=self._pool,
            session=self.session or self.cached_session,
            session_sink=self._remember if self.session_cache else None,
        )  # fmt: skip

    def _remember(self, session: ssl.SSLSession) -> None:
        self.cached_session = session

    def __repr__(self) -> str:
        return f"<TLSClientLayer {self.server_hostname}>"


# --- libdill facade ---------------------------------------------------------------------------


async def _close_given(s: Any) -> None:
    """A failed libdill-style attach closes the stream it was given, as the layers' ``attach``
    does (a handle that is closed or owned by a layer is not the caller's: left alone)."""
    with contextlib.suppress(StackError):
        handle = wrap_stream(s)
        handle._check()
        await close_shielded(handle)


async def _layer(s: Any, build: Callable[[], _L]) -> _L:
    # Bad arguments (a certificate that does not load, a bad ALPN list, no mem...) are found
    # while building the layer, before ``attach`` runs: ``s`` must be closed then too.
    try:
        return build()
    except BaseException:
        await _close_given(s)
        raise


async def tls_attach_server(
    s: Any, cert: CertSource, key: str | bytes | os.PathLike[str] | None, deadline: float = FOREVER
) -> TLSStream:
    """libdill's ``tls_attach_server(s, cert, key, deadline)``."""
    layer = await _layer(s, lambda: TLSServerLayer(cert, key))
    return await layer.attach(s, deadline)


async def tls_attach_server_mem(
    s: Any,
    cert: CertSource,
    key: str | bytes | os.PathLike[str] | None,
    mem: object,
    deadline: float = FOREVER,
) -> TLSStream:
    """libdill's ``tls_attach_server_mem``: state kept in ``mem`` (>= ``TLS_SIZE`` bytes).

    ::

        mem = bytearray(TLS_SIZE)
        tls = await tls_attach_server_mem(tcp, "cert.pem", "key.pem", mem, after(10))
        await tls.send_all(b"ABC")
        tcp = await tls_detach(tls, after(10))
    """
    if mem is None:
        await _close_given(s)
        raise InvalidArgument("tls_attach_server_mem needs a memory block (see TLS_SIZE)")
    layer = await _layer(s, lambda: TLSServerLayer(cert, key, mem=mem))
    return await layer.attach(s, deadline)


async def tls_attach_client(
    s: Any,
    deadline: float = FOREVER,
    *,
    context: ssl.SSLContext | trustme.CA | str | None = None,
    server_hostname: str | None = None,
    alpn: Sequence[str] | None = None,
    session: ssl.SSLSession | None = None,
) -> TLSStream:
    """libdill's ``tls_attach_client(s, deadline)``, with the verification settings as keywords."""
    layer = await _layer(
        s,
        lambda: TLSClientLayer(
            context, server_hostname=server_hostname, alpn=alpn, session=session
        ),
    )
    return await layer.attach(s, deadline)


async def tls_attach_client_mem(
    s: Any,
    mem: object,
    deadline: float = FOREVER,
    *,
    context: ssl.SSLContext | trustme.CA | str | None = None,
    server_hostname: str | None = None,
    alpn: Sequence[str] | None = None,
    session: ssl.SSLSession | None = None,
) -> TLSStream:
    """libdill's ``tls_attach_client_mem(s, mem, deadline)``."""
    if mem is None:
        await _close_given(s)
        raise InvalidArgument("tls_attach_client_mem needs a memory block (see TLS_SIZE)")
    layer = await _layer(
        s,
        lambda: TLSClientLayer(
            context, server_hostname=server_hostname, alpn=alpn, session=session, mem=mem
        ),
    )
    return await layer.attach(s, deadline)


def _tls(s: object) -> TLSStream:
    if not isinstance(s, TLSStream):
        raise NotSupported(f"not a TLS stream: {type(s).__name__}")
    return s


async def tls_done(s: TLSStream, deadline: float = FOREVER) -> None:
    """libdill's ``tls_done``: send close_notify; receiving continues."""
    await _tls(s).send_eof(deadline)


async def tls_detach(s: TLSStream, deadline: float = FOREVER) -> Handle:
    """libdill's ``tls_detach``: clean TLS shutdown; returns the underlying stream."""
    return await _tls(s).detach(deadline)
