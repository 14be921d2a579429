"""The TLS layer: ``tls_attach_server_mem`` and friends, on any byte stream.

Theory of operation
-------------------
On the wire this layer is plain TLS (1.2 or 1.3), done by OpenSSL through an ``ssl.SSLObject``
and two ``ssl.MemoryBIO``: ciphertext from the stream below is written into ``_incoming``,
OpenSSL's output is drained from ``_outgoing`` and sent below. The stream below is used only
through the byte-stream interface, so TLS can sit on a socket, a pipe, a memory stream or
another TLS layer (TLS in TLS).

Where things live. The caller's block (at least ``TLS_SIZE`` bytes, see ``_mem``) holds the
fixed state record (phase, direction flags, byte counters, current deadline). Nothing else is
per connection but OpenSSL's objects and a few small Python ones, so an idle connection costs
less than one on ``trio.SSLStream``: the ciphertext receive buffer is lent per read, and the
locks are made only when two tasks meet. This module is the upper half (handshake, send,
receive); ``_tlsclose`` (:class:`TLSClosing`) ends a connection (done, detach, unwrap, close),
and the lower half, ``_tlswire`` (:class:`TLSWire`, the base class), moves ciphertext, counts
whole records and keeps the state record. The layers and libdill's
``tls_*`` functions are in ``_tlslayer``.

The fast path (why this beats ``trio.SSLStream``). A receive first decrypts every whole record
already buffered *straight into the caller's buffer* (``SSLObject.read(n, buffer)``); while the
caller's buffer is not full it pulls more ciphertext from the stream below *without waiting*
(``_receive_nowait``) and decrypts again. Only when nothing at all is available does it wait,
and then the deadline's scope is built. One user call is one scheduler round trip, however many
16 KiB records it moves. Whether OpenSSL has a whole record to decrypt is known without asking
it (its "no" is an exception), from the record count ``_tlswire`` keeps. ``receive_some`` runs
the same loop (``_receive``) into a plaintext buffer lent for the synchronous step, and copies
what arrived into the ``bytes`` it returns: no buffer is zeroed or kept per call or per
connection, and none is held while a receive waits.
A send encrypts up to ``SEND_CHUNK`` bytes with one ``SSLObject.write`` and hands the ciphertext
below with one non-blocking send (``_send_nowait``); only a remainder waits.

States. ``_handshook`` (handshake done), and per direction: send ``done`` (close_notify sent:
``SendAfterDone`` after), send ``broken`` (a send was interrupted after OpenSSL had produced
records, so the peer is mid-record: sticky ``ConnectionBroken``), receive ``eof`` (the peer's
close_notify: receives return ``b""``), receive ``broken`` (an alert, a bad record, EOF without
close_notify, or a receive interrupted in the middle of a record). A receive that was only
waiting (nothing partial buffered) may be cancelled or time out and the stream stays usable.

Full duplex. One task may send while another receives; both can produce ciphertext (a receive
can make OpenSSL answer a KeyUpdate or send an alert), and ``_tlswire`` keeps the records in
the order OpenSSL made them. Two tasks sending at once is ``trio.BusyResourceError``. Both can
also need the peer's records: a send that finds OpenSSL in a handshake the peer started (a TLS
1.2 renegotiation; OpenSSL then refuses to encrypt) sends OpenSSL's part and takes in the peer's,
as a receive would, and ``_tlswire`` lets one task at a time wait on the stream below.

``send_eof`` (libdill's ``tls_done``) sends close_notify and leaves receiving open: TLS 1.3
half-close. ``detach`` (``tls_detach``) sends close_notify if needed, reads until the peer's
close_notify and returns the stream below with every byte that followed that close_notify
pushed back in front of it. Application data the peer sent before its close_notify and that
was not read is *not* merged into the plaintext stream below (that would let bytes cross the
security boundary, the STARTTLS-injection mistake): it is kept in :attr:`TLSStream.unread_data`.
"""

from __future__ import annotations

import socket
import ssl
import types
from collections.abc import Callable
from typing import Any, Final, final, overload

import trio

from ._base import (
    ByteStream,
    ConflictDetector,
    Handle,
    Kind,
    Phase,
    as_writable_view,
    check_max_bytes,
)
from ._deadline import FOREVER, check_deadline
from ._errors import (
    ConnectionBroken,
    InvalidArgument,
    ProtocolMismatch,
    SendAfterDone,
    TLSError,
)
from ._mem import TLS_SIZE, StateBlock
from ._tlsclose import _CUT_RECORD, _NO_CLOSE_NOTIFY, TLSClosing, _eof_cause, _given_stream
from ._tlsconfig import encode_hostname, record_sni
from ._tlsinfo import TLSInfo
from ._tlswire import (
    _HANDSHOOK,
    _RECV_BROKEN,
    _RECV_EOF,
    _SEND_BROKEN,
    _SEND_DONE,
    DEFAULT_RECEIVE_SIZE,
)
from ._transports import SocketTransport, StreamTransport, bytes_view, wrap_stream

__all__ = ["TLSStream"]

PLAIN_LENT: Final = 1024 * 1024
"""The most one ``receive_some`` returns: the largest plaintext buffer it decrypts into, lent
per call (see ``_take``). A larger ``max_bytes`` is served in steps of this size."""

# Plaintext buffers lent to receive_some for one synchronous step (pop and append are atomic,
# so threads each running Trio share the list). Its length is the deepest nesting of TLS in TLS
# seen, not the number of connections. A buffer grows to the largest max_bytes asked for, in
# powers of two from 64 KiB to PLAIN_LENT: a process that reads 64 KiB at a time holds 64 KiB.
_spare_plain: list[memoryview] = []
_NO_PLAIN: Final = memoryview(b"")

SEND_CHUNK: Final = 64 * 1024
"""Plaintext encrypted per ``SSLObject.write``, then handed below at once: four records. The
ciphertext a send holds stays this small, and with it what the sender's caches must hold: a
1 MiB ``send_all`` in 256 KiB steps ran at 1.3-1.5x trio.SSLStream in one process over TCP
(the BIO, its copy and the socket's buffers outgrow a core's 1 MiB L2), in 64 KiB steps at
1.8-1.9x; a sender in its own process over a Unix socket went from 1.4x to 2.5x (32 KiB:
2.1x, 128 KiB: 1.4-2.5x; benchmarks/README)."""


def _borrow(stream: Any) -> Handle:
    """The handle TLS drives for a stream given to the drop-in constructor, leaving the stream
    itself usable as trio.SSLStream leaves it.

    A ``trio.SocketStream`` is driven through its own socket object: a
    :class:`SocketTransport` on the very same ``socket.socket`` (not a copy of the file
    descriptor), which keeps the non-blocking fast path (``_receive_nowait``) while the
    ``SocketStream`` stays the caller's. Closing either closes that one socket, once. A trio
    whose socket wrapper keeps the standard socket elsewhere gets the generic adapter.
    """
    if isinstance(stream, trio.SocketStream):
        inner = getattr(stream.socket, "_sock", None)
        if isinstance(inner, socket.socket):
            return SocketTransport(inner)
        return StreamTransport(stream, "tcp")  # not wrap_stream: that one takes the socket
    return wrap_stream(stream)


@final
class TLSStream(TLSInfo, TLSClosing):
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

    Made with this constructor it *is* trio.SSLStream, wherever trio defines behaviour:
    :meth:`aclose` is graceful (it runs the handshake if needed, sends close_notify, and closes
    the stream below), the accessors trio guards raise :class:`trio.NeedHandshakeError` before
    the handshake, :attr:`transport_stream` is the very stream passed in (a
    ``trio.SocketStream`` stays usable and yours), and ``https_compatible=True`` is trio's
    HTTPS mode: a peer's EOF without close_notify (also before or during the handshake) is a
    clean end of stream, and closing sends no close_notify. A peer's EOF that is not clean is
    :class:`ConnectionBroken` with an ``ssl.SSLEOFError`` as its cause, as trio has it.

    Made by a layer (``tls_attach_server_mem``, ``TLSServerLayer.attach``, a
    ``ProtocolStack``), it keeps libdill's contract instead: the stream below is owned,
    :meth:`aclose` is the forceful ``hclose`` (close_notify only if it fits at once), and the
    clean ends are :meth:`detach` and :meth:`send_eof`.
    """

    def __class_getitem__(cls, transport: object) -> types.GenericAlias:
        """``TLSStream[SocketStream]``, where code written for trio.SSLStream (generic in its
        transport) subscripts it at run time: in a type alias, for instance."""
        return types.GenericAlias(cls, transport)

    __slots__ = (
        "_handshake_turn", "_https_compatible", "_raw", "_receive_conflict", "_send_conflict",
        "_server_side", "_ssl",
    )  # fmt: skip

    def __init__(
        self,
        transport_stream: Any,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        https_compatible: bool = False,
        mem: object = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        super().__init__()
        below = _borrow(transport_stream)
        if below.kind is not Kind.BYTES:
            raise ProtocolMismatch(f"TLS needs a byte stream; {below.label()} carries messages")
        assert isinstance(below, ByteStream)
        self._wire = below
        if not isinstance(ssl_context, ssl.SSLContext):
            raise InvalidArgument("ssl_context must be an ssl.SSLContext")
        block = StateBlock.allocate(TLS_SIZE) if mem is None else StateBlock.claim(mem, TLS_SIZE)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if server_side and ssl_context.sni_callback is None:
            ssl_context.sni_callback = record_sni
        try:
            self._ssl = ssl_context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=server_side,
                server_hostname=encode_hostname(server_hostname),
                session=session,
            )
        except (ValueError, ssl.SSLError) as exc:  # InvalidArgument is a ValueError
            block.release()
            raise InvalidArgument(f"cannot start TLS: {exc}") from exc
        self._bind(below, block)
        self._server_side = server_side
        self._https_compatible = https_compatible
        # trio.SSLStream's contract (graceful aclose, the stream given kept as it is) unless a
        # layer made this stream for libdill's (see _tlslayer).
        self._dropin = True
        self._given = transport_stream
        # Whose turn the handshake is: None (nobody's), True (one task's, nobody waits), or
        # the Event other tasks wait on, made only when two tasks meet: most never do.
        self._handshake_turn: trio.Event | bool | None = None
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )
        self._session_sink: Callable[[ssl.SSLSession], None] | None = None
        # The C object under ``SSLObject``'s Python wrappers, whose methods are called once per
        # record: the wrapper's frame costs as much as a small record's decryption. Same
        # semantics. (Bound methods are taken per call, not kept: 72 bytes each per connection.)
        self._raw: Any = getattr(self._ssl, "_sslobj", self._ssl)
        self.unread_data = b""
        """Application data the peer sent before its close_notify that was still unread when
        :meth:`detach` ran (it is not merged into the plaintext stream below)."""
        self._save_record(FOREVER)

    # --- what the connection tells (more in TLSInfo) -----------------------------------------

    def label(self) -> str:
        side = "server" if self._server_side else "client"
        return f"tls({side}, {self._ssl.version() or 'handshaking'})"

    @property
    def transport_stream(self) -> Any:
        """The stream below, as ``trio.SSLStream`` has it: the very stream given to the
        constructor; for a stream a layer made, the ``trio.abc.Stream`` it adapts, or the
        handle below in a stack. None once detached (:meth:`unwrap`). Do not use it while TLS
        is attached."""
        if self._phase is Phase.DETACHED:
            return None
        return self._given if self._dropin else _given_stream(self._below)

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
        while not self._flags & _HANDSHOOK:
            turn = self._handshake_turn
            if turn is not None:  # another task is in the handshake: wait for its end, retry
                if not isinstance(turn, trio.Event):
                    turn = self._handshake_turn = trio.Event()
                await turn.wait()
                continue
            # The first task here: no lock and no checkpoint before it starts.
            self._handshake_turn = True
            try:
                await self._handshake_steps(deadline)
            except BaseException:
                # trio.SSLStream's rule: a handshake that did not finish (failed, timed out,
                # cancelled) leaves the stream broken, so aclose only closes it. (A layer's
                # attach closes the stream then anyway.)
                if not self._flags & _HANDSHOOK and self._dropin:
                    self._break_both()
                raise
            finally:
                waiting, self._handshake_turn = self._handshake_turn, None
                if isinstance(waiting, trio.Event):
                    waiting.set()

    async def _handshake_steps(self, deadline: float) -> None:
        while not self._flags & _HANDSHOOK:
            # A handshake that failed part-way (its records half sent, the stream below
            # broken) cannot go on: OpenSSL would wait for an answer that never comes.
            if self._send_error is not None or self._recv_error is not None:
                raise ConnectionBroken("the TLS handshake failed earlier")
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                self._break_both()
                await self._flush_on_close()  # our alert tells the peer why
                raise TLSError.from_ssl(exc, "handshake failed") from exc
            wrote = self._outgoing.pending
            if done and self._server_side and self._ssl.version() == "TLSv1.3":
                self._send_or_delay()  # the session tickets: the client may not read yet
            else:
                await self._flush(deadline)
            if done:
                self._set(_HANDSHOOK)
                if self._ssl.version() != "TLSv1.3":  # 1.3 tickets come later
                    self._keep_session()
                break
            # A server's first step sends nothing, and the ClientHello is often here already
            # (sent right after connecting): read it without a wait. After a step that sent
            # records, the peer's answer to them cannot be here yet: wait first.
            if not wrote and not self._drained and self._take_nowait():
                continue
            if not await self._pull(deadline, during="handshake"):
                self._break_both()
                if self._https_compatible:  # a client that left: receives see EOF
                    self._set(_RECV_EOF)
                raise ConnectionBroken(
                    "the peer closed the connection during the handshake"
                ) from _eof_cause()

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
        busy = self._send_conflict  # ConflictDetector, spelled out: this is a hot path
        if busy.held:
            raise busy.conflict()
        busy.held = True
        try:
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
                    except ssl.SSLWantReadError:
                        await self._peer_handshake_step(checked, part_sent=start > 0)
                        continue  # the same chunk again
                    except ssl.SSLError as exc:
                        self._send_error = f"TLS error while sending: {exc.reason}"
                        self._set(_SEND_BROKEN)
                        raise TLSError.from_ssl(exc, "send failed") from exc
                    await self._flush(checked)
                    start += SEND_CHUNK
                self._bytes_out += size
            if checkpoint:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            busy.held = False

    async def _peer_handshake_step(self, deadline: float, *, part_sent: bool) -> None:
        """A write found OpenSSL in a handshake the peer started (a TLS 1.2 renegotiation) that
        must go on before it encrypts again: send what OpenSSL queued, then take in the peer's
        next records, or let the task receiving take them in (``_pull``), as trio.SSLStream
        does. Nothing of the chunk went out; an interruption breaks sending only if earlier
        chunks of this send did."""
        try:
            await self._flush(deadline)
            if not await self._pull(deadline, during="send"):
                self._transport_eof()
                raise ConnectionBroken("the peer closed in the middle of a renegotiation")
        except BaseException:
            if part_sent:
                self._send_error = "a send was interrupted part-way"
                self._set(_SEND_BROKEN)
            raise

    async def _wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            self._check_send()
            await self._wait_wire_writable()

    # --- receive side -------------------------------------------------------------------------

    def _raise_receive_error(self) -> None:
        assert self._recv_error is not None
        cls, message = self._recv_error
        raise cls(message) from (
            _eof_cause() if message in (_NO_CLOSE_NOTIFY, _CUT_RECORD) else None
        )

    def _fill(self, view: memoryview) -> int | None:
        """Decrypt into ``view`` all that is available without waiting.

        Returns the count (0 only at the peer's close_notify), or None when nothing at all
        could be had. An error after some bytes were delivered is kept for the next call.
        """
        rest = view  # the part of the caller's buffer still empty
        raw = self._raw  # its methods are not cached: a bound method is an allocation per call
        while True:
            try:
                # Only call into OpenSSL when it has plaintext or a whole record: its "want
                # more" is an exception, which costs more than decrypting a small record.
                while rest:
                    if not raw.pending():  # plaintext left over from a record
                        if not self._records:
                            break
                        self._records -= 1
                    n = raw.read(0, rest)  # 0: as much as fits in ``rest``
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
            self._recv_error = (ConnectionBroken, _CUT_RECORD)
        elif self._https_compatible:
            self._set(_RECV_EOF)
            return
        else:
            self._recv_error = (ConnectionBroken, _NO_CLOSE_NOTIFY)
        self._set(_RECV_BROKEN)

    async def receive_into(self, buffer: Any, deadline: float = FOREVER) -> int:
        """Receive up to ``len(buffer)`` bytes into ``buffer``; return the count, 0 at EOF.

        Every whole record already here is decrypted straight into ``buffer`` in this one
        call, the fast way to read bulk data::

            buf = bytearray(65536)
            while n := await tls.receive_into(buf):
                sink.write(memoryview(buf)[:n])
        """
        self._check()  # the base class's, inlined: one coroutine less per call
        return await self._receive(as_writable_view(buffer), 0, deadline, True)

    async def receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        """Receive up to ``max_bytes`` bytes (64 KiB if ``None``, at most ``PLAIN_LENT``,
        1 MiB, a call); ``b""`` at the peer's close_notify. Every whole record already here
        comes in this one call, as ``bytes``, as trio.SSLStream returns it::

            while data := await tls.receive_some():
                parser.feed(data)
        """
        self._check()
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        return await self._receive(None, size, deadline, True)

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        return await self._receive(as_writable_view(buffer), 0, deadline, checkpoint)

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        return await self._receive(None, size, deadline, True)

    @overload
    async def _receive(
        self, view: memoryview, size: int, deadline: float, checkpoint: bool
    ) -> int: ...
    @overload
    async def _receive(self, view: None, size: int, deadline: float, checkpoint: bool) -> bytes: ...
    async def _receive(
        self, view: memoryview | None, size: int, deadline: float, checkpoint: bool
    ) -> int | bytes:
        """Both receives: into ``view`` (the count), or, when it is None, up to ``size`` bytes
        as ``bytes`` (see ``_take``). A wait, if any, is the only scheduler turn."""
        checked = check_deadline(deadline)
        busy = self._receive_conflict  # ConflictDetector, spelled out: this is a hot path
        if busy.held:
            raise busy.conflict()
        busy.held = True
        try:
            if checkpoint:
                await trio.lowlevel.checkpoint_if_cancelled()
            if self._pushback:
                result: int | bytes = (
                    self._take_pushback(size) if view is None else self._take_pushback_into(view)
                )
                if checkpoint:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return result
            if not self._flags & _HANDSHOOK:
                try:
                    await self._handshake(checked)
                except ConnectionBroken:
                    # https_compatible: a client that closed before or during the handshake
                    # (browsers do) is an end of stream, as trio.SSLStream has it.
                    if not self._flags & _RECV_EOF:
                        raise
            waited = False
            while True:
                if self._flags & _RECV_EOF:
                    result = 0 if view is not None else b""
                    break
                if self._recv_error is not None:
                    self._raise_receive_error()
                try:
                    got = self._fill(view) if view is not None else self._take(size)
                except TLSError:
                    await self._flush_on_close()  # the alert OpenSSL queued for the peer
                    raise
                if self._outgoing.pending:
                    await self._flush(checked)
                if got is not None:
                    result = got
                    break
                waited = True
                if not await self._pull(checked, during="receive"):
                    self._transport_eof()
            self._bytes_in += len(result) if isinstance(result, bytes) else result
            if checkpoint and not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        finally:
            busy.held = False

    def _take(self, size: int) -> bytes | None:
        """``receive_some``'s ``_fill``: decrypt into a lent buffer, return a copy as bytes.

        The buffer is lent for this synchronous step only (a free list, as the ciphertext
        scratch of ``_tlswire``), so no connection keeps one, nothing is zeroed per call, and
        the one copy, into the ``bytes`` trio.SSLStream returns, is of what arrived.
        """
        lent = _spare_plain.pop() if _spare_plain else _NO_PLAIN
        room = len(lent)
        if room < size and room < PLAIN_LENT:  # grown in powers of two, up to PLAIN_LENT
            room = min(max(1 << (size - 1).bit_length(), DEFAULT_RECEIVE_SIZE), PLAIN_LENT)
            lent = memoryview(bytearray(room))
        try:
            n = self._fill(lent if size >= room else lent[:size])
            if n is None:
                return None
            return bytes(lent if n == room else lent[:n])
        finally:
            _spare_plain.append(lent)

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
