"""Ending a TLS stream: ``send_eof`` (libdill's ``tls_done``), ``detach``, ``unwrap``, ``aclose``.

Theory of operation
-------------------
:class:`TLSClosing` is the part of :class:`~trio_tlsattach._tls.TLSStream` (read ``_tls``
first) that ends a connection, one way or the other:

* **done** (``send_eof``): close_notify queued and sent, receiving left open (TLS 1.3
  half-close). OpenSSL's ``SSL_shutdown`` is called through ``SSLObject.unwrap``, which calls it
  twice; the second call would throw away application data, so decrypted-but-unread bytes move
  to the pushback buffer first and undecrypted ciphertext is kept out of OpenSSL's reach.
* **detach**: done, then read until the peer's close_notify; the bytes after it go back in
  front of the stream below; application data not yet read is kept in ``unread_data``.
* **close**, two contracts, chosen by how the stream was made (``_dropin``). Made with the
  ``TLSStream(...)`` constructor, ``aclose`` is ``trio.SSLStream.aclose``: graceful (handshake
  first if needed, close_notify without waiting for the peer's, then the stream below closed);
  a broken connection or HTTPS mode only closes; a failure closes the stream below forcefully
  and raises. Made by a layer, ``aclose`` is libdill's forceful ``hclose``: close_notify only
  if it fits at once, then everything below closed.
* **sessions**: a client layer's session cache is fed on detach and close (TLS 1.3 tickets
  arrive after the handshake, so records already here are read for them first).
"""

from __future__ import annotations

import contextlib
import math
import ssl
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Final

import trio

from ._base import ByteStream, ConflictDetector, Handle, Phase, close_shielded
from ._deadline import FOREVER, check_deadline
from ._errors import ConnectionBroken, StackError, TLSError
from ._tlswire import (
    _HANDSHOOK,
    _RECV_EOF,
    _SEND_BROKEN,
    _SEND_DONE,
    DEFAULT_RECEIVE_SIZE,
    TLSWire,
)

__all__ = ["TLSClosing"]

_NO_CLOSE_NOTIFY: Final = "the peer closed without close_notify"
_CUT_RECORD: Final = "the stream ended in the middle of a TLS record"


def _eof_cause() -> ssl.SSLEOFError:
    """What OpenSSL reports for a stream that ends without close_notify, as the ``__cause__``
    of the :class:`ConnectionBroken` raised then (trio.SSLStream's users test for it)."""
    return ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")


def _given_stream(below: Handle) -> Any:
    """The stream a user gave, where ``below`` only adapts it (a ``StreamTransport``)."""
    inner = getattr(below, "stream", None)
    return inner if isinstance(inner, trio.abc.Stream) else below


class TLSClosing(TLSWire):
    """done, detach, unwrap and close: the base of ``TLSStream`` above ``TLSWire``."""

    __slots__ = ("_dropin", "_given", "_session_sink", "unread_data")

    # Set by TLSStream.__init__, as these slots are.
    _ssl: ssl.SSLObject
    _server_side: bool
    _https_compatible: bool
    _dropin: bool  # made by the drop-in constructor: trio.SSLStream's contract
    _given: Any  # the stream the constructor was given
    _session_sink: Callable[[ssl.SSLSession], None] | None  # a client layer's session cache
    _send_conflict: ConflictDetector
    _receive_conflict: ConflictDetector

    # What the upper half (TLSStream) provides.

    @abstractmethod
    async def _handshake(self, deadline: float) -> None:
        """Run the handshake if it has not happened (one task at a time)."""

    @abstractmethod
    def _fill(self, view: memoryview) -> int | None:
        """Decrypt into ``view`` what is available without waiting (None: nothing was)."""

    @abstractmethod
    def _transport_eof(self) -> None:
        """Note that the stream below ended."""

    @abstractmethod
    def _raise_receive_error(self) -> None:
        """Raise the error that broke receiving."""

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

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """Shut TLS down cleanly and return the stream below (libdill's ``tls_detach``).

        Sends close_notify if not done yet, reads until the peer's close_notify, and returns the
        stream below with every byte that followed the peer's close_notify pushed back in front.
        Unread application data is kept in :attr:`unread_data`. On any failure (deadline,
        cancellation, EOF without close_notify) the whole stack is closed and the error raised.
        """
        await self._detach_handle(deadline)
        return self._wire  # ``_below``, known to be a byte stream since attach

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
                            raise ConnectionBroken(_NO_CLOSE_NOTIFY) from _eof_cause()
            self.unread_data = bytes(unread)
            self._keep_session()
            return self._incoming.read()

    async def unwrap(self) -> tuple[Any, bytes]:
        """``trio.SSLStream.unwrap``: detach, and return ``(transport, trailing_bytes)``.

        Unlike :meth:`detach`, the bytes that followed the peer's close_notify are returned
        instead of pushed back. A wrapped foreign stream is returned as the original object.
        """
        below = await self.detach()
        trailing = bytes(below._pushback)
        below._pushback.clear()
        return (self._given if self._dropin else _given_stream(below)), trailing

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

    async def aclose(self) -> None:
        """Close, as the way this stream was made says (see the class docstring).

        Made by the drop-in constructor, as ``trio.SSLStream.aclose``: unless the connection is
        broken or in HTTPS mode, run the handshake if it has not happened, send close_notify
        (without waiting for the peer's: a peer that already went away, or another task busy
        sending, only costs the close_notify), then close the stream below. If the handshake
        or the sending fails otherwise (or is cancelled), the stream below is closed forcefully
        and the error raised. Made by a layer: libdill's forceful ``hclose``.
        """
        if not self._dropin or self._phase is not Phase.OPEN or self._owner is not None:
            await super().aclose()
            return
        broken = self._send_error is not None or self._recv_error is not None
        if not broken and not self._https_compatible:
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
                if not self._flags & _HANDSHOOK:
                    await self._handshake(math.inf)  # a checked FOREVER
                if not self._flags & _SEND_DONE and not self._send_conflict.held:
                    with contextlib.suppress(trio.BrokenResourceError, trio.BusyResourceError):
                        self._start_shutdown()
                        await self._flush(math.inf)
            except BaseException:
                await close_shielded(self)  # trio's aclose_forcefully of what is below
                raise
        # The stream below is closed with its own aclose, as trio.SSLStream closes its
        # transport: a drop-in TLSStream below says its own close_notify too.
        self._phase = Phase.CLOSED
        self._release()
        below = self._below
        below._disown()
        await below.aclose()

    async def _close_resources(self) -> None:
        # Forceful, but a peer that can still hear us gets a close_notify if it fits now (not
        # in https_compatible mode, where trio.SSLStream sends none either). The drop-in's
        # aclose sent its close_notify already, and a forceful close of it sends none, as
        # trio's aclose_forcefully.
        try:
            if self._flags & _HANDSHOOK and not self._server_side:
                self._absorb_tickets()
            polite = not self._flags & (_SEND_DONE | _SEND_BROKEN) and not self._https_compatible
            if self._flags & _HANDSHOOK and polite and not self._dropin:
                with contextlib.suppress(ssl.SSLError):
                    self._ssl.unwrap()
                await self._flush_on_close()
        finally:  # even when cancelled: closing must close
            await super()._close_resources()
