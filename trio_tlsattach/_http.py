"""The HTTP layer: libdill's ``http`` protocol (a request or status line and fields) on h11.

Theory of operation
-------------------
libdill's http layer handles only the *head* of an HTTP/1.1 message; what follows it (a body,
a WebSocket after ``101 Switching Protocols``, a tunnel after ``CONNECT``) is for the stream
below. Here the attached :class:`HTTPStream` is a **byte stream** (``Kind.BYTES``): the head is
sent and received with the libdill calls (``send_request``/``send_status``, ``send_field``,
``done``; ``receive_request``/``receive_status``, ``receive_field``), and once it is over the
same object carries the body as plain bytes (``send_all``, ``receive_some``, ``receive_into``,
``send_eof``), so a body can be read without detaching, a byte layer (TLS, framing) can be
pushed on top, and Trio's stream checks apply. A message stream would not fit: a head is not
one message, and a body has no message boundaries.

* **send**: each call validates its argument first (EINVAL, nothing sent), then writes its line.
  The order is the sans-IO :class:`HTTPCore`'s: one start line, fields, then ``done`` (the
  blank line, libdill's ``http_done``); a head call after ``done`` is :class:`SendAfterDone`
  (EPIPE), body bytes before it EINVAL. ``send_eof`` ends an open head first, then half-closes.
* **receive**: the first ``receive_request`` or ``receive_status`` reads until the peer's whole
  head is in (bounded: EMSGSIZE) and returns its start line; ``receive_field`` then returns the
  fields one by one and raises :class:`PeerDone` (EPIPE) after the last, as libdill's
  ``http_recvfield`` does. Bytes read past the blank line are pushed back in front of this
  stream: body reads and ``detach`` serve them first. Body reads before any head call read the
  head first (its start line decides which kind it is). The body is the bytes as they are on
  the wire: a chunked body is not decoded, and where it ends is for the user to tell. Partial
  heads stay in the core, so a receive that times out or is cancelled loses nothing.
* **errors**: a malformed head is :class:`HTTPProtocolError` (EPROTO), an over-long line or
  head :class:`HeaderTooLarge` (EMSGSIZE), both :class:`HTTPHeadError` carrying the
  ``status_hint`` to answer with (400, 414, 431, 501); the stream ending inside a head is
  :class:`ConnectionBroken`. Each is sticky on the receive side, while the send side stays
  usable to answer. Bad arguments are EINVAL.
* **detach** (libdill's ``http_detach``): end the head if one was begun (never sends a blank
  line of its own otherwise), wait for the peer's head, and hand the byte stream below back
  with every byte after that head (and not yet read) pushed back in front of it. It fails,
  closing the stack, if the peer's head is malformed, over-long, or cut by the end of stream.

Per-connection state: the core (the partial head, the parsed head, both directions' states);
a 16 KiB read buffer only while a head comes in; no state block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, final

import trio

from ._base import (
    AttachedMixin,
    ByteStream,
    ConflictDetector,
    Kind,
    as_writable_view,
    check_max_bytes,
    close_shielded,
)
from ._cores import NEED_DATA
from ._cores.http import (
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    Head,
    HeaderTooLarge,
    HeadKind,
    HTTPCore,
    HTTPHeadError,
    HTTPProtocolError,
    PeerDone,
    RequestLine,
    SendState,
    StatusLine,
)
from ._deadline import FOREVER, check_deadline
from ._errors import NotSupported
from ._transports import begin_attach

__all__ = [
    "HTTPHeadError",
    "HTTPLayer",
    "HTTPProtocolError",
    "HTTPStream",
    "Head",
    "HeaderTooLarge",
    "PeerDone",
    "RequestLine",
    "StatusLine",
    "http_attach",
    "http_detach",
    "http_done",
    "http_recvfield",
    "http_recvrequest",
    "http_recvstatus",
    "http_sendfield",
    "http_sendrequest",
    "http_sendstatus",
]

READ_SIZE: Final = 16384
"""Bytes read from below per read while a head comes in (a head is small; a body is not read
here but passed through)."""

DEFAULT_RECEIVE_SIZE: Final = 65536


@final
class HTTPStream(AttachedMixin, ByteStream):
    """An HTTP head exchange, then the body as bytes (what :meth:`HTTPLayer.attach` returns).

    A client::

        http = await HTTPLayer().attach(tcp)
        await http.send_request("GET", "/index.html")
        await http.send_field("Host", "example.org")
        await http.done()
        code, reason = await http.receive_status(deadline=after(10))
        fields = await http.receive_fields()       # or receive_field() until PeerDone (EPIPE)
        body = await http.receive_some()           # or: tcp = await http.detach()
    """

    __slots__ = ("_body_ready", "_core", "_receive_conflict", "_send_conflict")
    _below: ByteStream

    def __init__(self, below: ByteStream, core: HTTPCore) -> None:
        super().__init__()
        self._core = core
        self._bind(below)
        self._body_ready = False  # the bytes after the peer's head were moved to _pushback
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )

    def label(self) -> str:
        """``http``: this layer's part of a stack's repr."""
        return "http"

    @property
    def core(self) -> HTTPCore:
        """The sans-IO core (for inspection: its states, the head; do not feed it)."""
        return self._core

    @property
    def head(self) -> Head | None:
        """The peer's whole head (start line and every field) once received, else ``None``.

        Still readable after ``detach``.
        """
        return self._core.head

    # --- send side: the head --------------------------------------------------------------------

    async def _send_line(self, encode: Callable[[], bytes], deadline: float) -> None:
        self._check()
        checked = check_deadline(deadline)
        with self._send_conflict:
            # A cancel before the line is made leaves the head as it was (the call can be
            # made again); one during the send cuts the line, and the stream below then
            # refuses further sends.
            await trio.lowlevel.checkpoint_if_cancelled()
            wire = encode()  # EINVAL/EPIPE before anything is sent
            await self._below._send_all(wire, checked, False)
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_request(self, command: str, resource: str, deadline: float = FOREVER) -> None:
        """Send the request line ``COMMAND RESOURCE HTTP/1.1`` (libdill's ``http_sendrequest``).

        EINVAL for a command that is not a token or a resource with spaces or control
        characters, or if a start line was already sent.
        """
        await self._send_line(lambda: self._core.send_request(command, resource), deadline)

    async def send_status(self, code: int, reason: str, deadline: float = FOREVER) -> None:
        """Send the status line ``HTTP/1.1 CODE REASON`` (libdill's ``http_sendstatus``).

        ``code`` is 100 to 599 (EINVAL otherwise); ``reason`` may not hold CR, LF or NUL.
        """
        await self._send_line(lambda: self._core.send_status(code, reason), deadline)

    async def send_field(self, name: str, value: str, deadline: float = FOREVER) -> None:
        """Send one field ``Name: value`` (libdill's ``http_sendfield``).

        EINVAL for a name that is not an RFC 7230 token (a colon, a space...) or a value with
        CR, LF or NUL; spaces around the value are dropped.
        """
        await self._send_line(lambda: self._core.send_field(name, value), deadline)

    async def done(self, deadline: float = FOREVER) -> None:
        """End the head with the blank line (libdill's ``http_done``): the peer's
        ``receive_field`` then raises :class:`PeerDone`. Body bytes may follow with
        ``send_all``. Twice is :class:`SendAfterDone` (EPIPE)."""
        await self._send_line(self._core.send_done, deadline)

    # --- send side: the body ----------------------------------------------------------------------

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        check_deadline(deadline)
        with self._send_conflict:
            self._core.check_body()
            await self._below._send_all(data, deadline, checkpoint)

    async def _wait_send_all_might_not_block(self) -> None:
        await self._below._wait_send_all_might_not_block()

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            if self._core.send_state is SendState.CLOSED:
                await trio.lowlevel.checkpoint()  # a second send_eof does nothing (Trio's rule)
                return
            ending = self._core.send_eof()
            if ending:
                await self._below._send_all(ending, checked, False)
            await self._below._send_eof(checked)

    async def _send_on_close(self, data: bytes) -> None:
        await self._below._send_on_close(data)

    # --- receive side: the head -------------------------------------------------------------------

    async def receive_request(self, deadline: float = FOREVER) -> tuple[str, str]:
        """Receive the peer's head; return its request line as ``(command, resource)``.

        libdill's ``http_recvrequest``. :class:`PeerDone` (EPIPE) if the stream ended before a
        head began; :class:`HTTPProtocolError` (EPROTO) for a malformed head or a status line;
        :class:`HeaderTooLarge` (EMSGSIZE) over the limits; EINVAL the second time.
        """
        line = await self._start_line(HeadKind.REQUEST, deadline)
        assert isinstance(line, RequestLine)
        return line.command, line.resource

    async def receive_status(self, deadline: float = FOREVER) -> tuple[int, str]:
        """Receive the peer's head; return its status line as ``(code, reason)``.

        libdill's ``http_recvstatus``; errors as :meth:`receive_request`'s.
        """
        line = await self._start_line(HeadKind.STATUS, deadline)
        assert isinstance(line, StatusLine)
        return line.code, line.reason

    async def receive_field(self, deadline: float = FOREVER) -> tuple[str, str]:
        """The next field of the peer's head as ``(name, value)``, the name as sent.

        libdill's ``http_recvfield``: after the last field it raises :class:`PeerDone` (EPIPE),
        again on every later call. EINVAL before the start line was received. Never waits:
        the whole head is in once the start line is returned.
        """
        self._check()
        check_deadline(deadline)
        with self._receive_conflict:
            await trio.lowlevel.checkpoint()
            return self._core.next_field()

    async def receive_fields(self, deadline: float = FOREVER) -> list[tuple[str, str]]:
        """Every field of the peer's head not yet returned by :meth:`receive_field`."""
        self._check()
        check_deadline(deadline)
        with self._receive_conflict:
            await trio.lowlevel.checkpoint()
            return self._core.remaining_fields()

    async def _start_line(self, kind: HeadKind, deadline: float) -> RequestLine | StatusLine:
        self._check()
        checked = check_deadline(deadline)
        with self._receive_conflict:
            await self._wait_head(kind, checked)
            return self._core.take_start_line(kind)

    async def _wait_head(self, kind: HeadKind, deadline: float) -> None:
        """Read until the peer's head is whole (or the stream ended before one); the caller
        holds the receive side. The bytes after the head go to this stream's pushback."""
        await trio.lowlevel.checkpoint_if_cancelled()
        core, below, view = self._core, self._below, memoryview(bytearray(READ_SIZE))
        while core.next_head(kind) is NEED_DATA:  # raises the core's errors (sticky)
            n, _ = await below._receive_for_owner(view, deadline)
            if n:
                core.feed(view[:n])
            else:
                core.feed_eof()
        if not self._body_ready:
            self._body_ready = True
            self._pushback += core.trailing_data  # after whatever unread() put in front
        await trio.lowlevel.cancel_shielded_checkpoint()

    # --- receive side: the body -------------------------------------------------------------------

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        checked = check_deadline(deadline)
        with self._receive_conflict:
            if not self._body_ready:
                await self._wait_head(HeadKind.AUTO, checked)
            if self._pushback:
                await trio.lowlevel.checkpoint()
                return self._take_pushback(size)
            return await self._below._receive_some(size, checked)

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        view = as_writable_view(buffer)  # EINVAL for read-only, non-contiguous or empty
        checked = check_deadline(deadline)
        with self._receive_conflict:
            if not self._body_ready:
                await self._wait_head(HeadKind.AUTO, checked)  # checkpoints itself
            elif checkpoint:
                await trio.lowlevel.checkpoint_if_cancelled()
            if self._pushback:
                n = self._take_pushback_into(view)
                if checkpoint:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return n
            # The stream below checkpoints if asked: its call is then this call's checkpoint.
            return await self._below._receive_into(view, checked, checkpoint)

    def _receive_nowait(self, view: memoryview) -> int | None:
        # Before the peer's head is read, a layer above must take the waiting path
        # (_receive_into), which reads the head first.
        if not self._body_ready:
            return None
        if self._pushback:
            return self._take_pushback_into(view)
        return self._below._receive_nowait(view)

    async def _wait_receivable(self, deadline: float) -> bool:
        if not self._body_ready:
            return False
        if self._pushback:
            return True
        return await self._below._wait_receivable(deadline)

    # --- detach -----------------------------------------------------------------------------------

    async def detach(self, deadline: float = FOREVER) -> ByteStream:
        """End the head (if one was begun), wait for the peer's, return the stream below.

        libdill's ``http_detach``. Bytes after the peer's head that were not read here are
        pushed back in front of the returned stream, so the body (or what follows an upgrade)
        is read from there. A malformed or cut head, a deadline, or a cancel closes the whole
        stack and raises::

            code, reason = await http.receive_status()
            tcp = await http.detach(deadline=after(5))
            body = await tcp.receive_some()
        """
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below

    async def _detach_protocol(self, deadline: float) -> bytes:
        checked = check_deadline(deadline)
        with self._send_conflict, self._receive_conflict:
            if self._core.send_state is SendState.FIELDS:
                await self._below._send_all(self._core.send_done(), checked, False)
            if not self._body_ready:
                await self._wait_head(HeadKind.AUTO, checked)
            else:
                await trio.lowlevel.checkpoint()
            leftover = bytes(self._pushback)
            self._pushback.clear()
            return leftover


@final
class HTTPLayer:
    """libdill's http protocol on h11: the recipe for :class:`HTTPStream`.

    ``max_line_size`` (8 KiB) bounds each received line, ``max_header_size`` (64 KiB) a whole
    received head (EINVAL for anything but an int >= 1). Attaches to any byte stream::

        http = await stack.push(HTTPLayer())
        command, resource = await http.receive_request()
    """

    __slots__ = ("_max_header", "_max_line")
    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        core = HTTPCore(max_line_size=max_line_size, max_header_size=max_header_size)  # EINVAL
        self._max_line, self._max_header = core.max_line_size, core.max_header_size

    def __repr__(self) -> str:
        return f"HTTPLayer(max_line_size={self._max_line}, max_header_size={self._max_header})"

    async def attach(self, stream: Any, deadline: float = FOREVER) -> HTTPStream:
        """Attach to the byte stream ``stream``; nothing is exchanged yet.

        A message stream is closed and :class:`ProtocolMismatch` (EPROTO) is raised; as in
        libdill, any failure (a bad deadline, a cancel) closes ``stream``.
        """
        below = await begin_attach(stream, Kind.BYTES, "http")
        assert isinstance(below, ByteStream)
        try:
            check_deadline(deadline)
            await trio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            await close_shielded(below)
            raise
        core = HTTPCore(max_line_size=self._max_line, max_header_size=self._max_header)
        return HTTPStream(below, core)


# --- libdill facade -----------------------------------------------------------------------------


def _http(s: object) -> HTTPStream:
    if not isinstance(s, HTTPStream):
        raise NotSupported(f"not an HTTP layer: {type(s).__name__}")
    return s


async def http_attach(s: Any) -> HTTPStream:
    """libdill's ``http_attach(s)``: the HTTP protocol on the byte stream ``s``."""
    return await HTTPLayer().attach(s)


async def http_sendrequest(
    s: HTTPStream, command: str, resource: str, deadline: float = FOREVER
) -> None:
    """libdill's ``http_sendrequest(s, command, resource, deadline)``."""
    await _http(s).send_request(command, resource, deadline)


async def http_recvrequest(s: HTTPStream, deadline: float = FOREVER) -> tuple[str, str]:
    """libdill's ``http_recvrequest``: ``(command, resource)`` instead of two buffers."""
    return await _http(s).receive_request(deadline)


async def http_sendstatus(
    s: HTTPStream, status: int, reason: str, deadline: float = FOREVER
) -> None:
    """libdill's ``http_sendstatus(s, status, reason, deadline)``."""
    await _http(s).send_status(status, reason, deadline)


async def http_recvstatus(s: HTTPStream, deadline: float = FOREVER) -> tuple[int, str]:
    """libdill's ``http_recvstatus``: ``(status, reason)`` instead of a return value and a
    buffer."""
    return await _http(s).receive_status(deadline)


async def http_sendfield(s: HTTPStream, name: str, value: str, deadline: float = FOREVER) -> None:
    """libdill's ``http_sendfield(s, name, value, deadline)``."""
    await _http(s).send_field(name, value, deadline)


async def http_recvfield(s: HTTPStream, deadline: float = FOREVER) -> tuple[str, str]:
    """libdill's ``http_recvfield``: ``(name, value)``; :class:`PeerDone` (EPIPE) at the end::

    while True:
        try:
            name, value = await http_recvfield(s)
        except PeerDone:
            break
    """
    return await _http(s).receive_field(deadline)


async def http_done(s: HTTPStream, deadline: float = FOREVER) -> None:
    """libdill's ``http_done``: the blank line that ends the head (EPIPE the second time)."""
    await _http(s).done(deadline)


async def http_detach(s: HTTPStream, deadline: float = FOREVER) -> ByteStream:
    """libdill's ``http_detach``: the byte stream below, the body's bytes in front of it."""
    return await _http(s).detach(deadline)
