"""The WebSocket layer (RFC 6455, libdill's ``ws``): a message stream over any byte stream.

Theory of operation
-------------------
On the wire: an HTTP/1.1 upgrade (the client asks for ``resource`` on ``host``; the server
accepts and reports what was asked), then WebSocket frames; with ``http=False``
(libdill's ``WS_NOHTTP``) frames only, the handshake having been done elsewhere. The protocol
work (handshake, frame parsing, masking, UTF-8, fragment reassembly, size limit, close states)
is the sans-IO :class:`~trio_tlsattach._cores.ws.WSCore`, on wsproto; this module moves bytes.

* **attach** runs the handshake within its deadline: the client sends its request, then both
  ends read until the core says it is done. A failed handshake (malformed request or response,
  wrong ``Sec-WebSocket-Accept``, an over-long header, a refusal) is :class:`WebSocketError`
  (EPROTO; a server first answers ``400``), an early end :class:`ConnectionBroken`; either way
  the stream passed in is closed, as libdill does.
* **messages**: :meth:`WSStream.send_message` sends bytes as a binary message (a text one on a
  ``text=True`` layer), :meth:`WSStream.send` a ``str`` as text and bytes as binary.
  :meth:`WSStream.receive` returns ``str`` for a text message and ``bytes`` for a binary one;
  :meth:`WSStream.receive_message` (the message-stream interface every layer shares) returns
  bytes for both, a text message as its UTF-8. Receives read below only while the core has no
  whole message, trying what is already there first, so ``IMMEDIATE`` returns a buffered
  message; a partial message stays in the core, so a receive that times out loses nothing.
  An oversized message is :class:`MessageTooLarge` (EMSGSIZE) once and is skipped; bad input is
  :class:`WebSocketError` (EPROTO), sticky, raised after every message that came before it.
* **control frames**: a ping is answered with a pong as soon as it is read. The answer must not
  cut into a message another task is sending, so the one writer at a time is whoever holds
  ``_wire`` (a :class:`trio.Lock`): when a sender holds it, the receiver leaves the pong in the
  core and the sender flushes it right after its own bytes.
* **done** (:meth:`WSStream.send_eof`, ``ws_done``) sends the close frame with a status and
  reason; later sends are :class:`SendAfterDone` (EPIPE). The peer's close ends the message
  stream (``receive_message`` returns None) and its status and reason are
  :attr:`WSStream.close_status` / :attr:`WSStream.close_reason`. As in libdill the close is a
  half-close: after the peer's close this end may still send until it closes too.
* **detach** completes the close handshake (sends this end's close if not yet sent, reads until
  the peer's; messages read on the way are kept in :attr:`WSStream.unread_messages`) and hands
  back the byte stream below with every byte that followed the peer's close frame pushed back.
* **aclose** is forceful, but first tries (without waiting) to send a close frame if this end
  had not, so a well-behaved peer sees a close rather than a bare end of stream.

Per-connection state: the core, a 64 KiB receive buffer, the conflict detectors and the writer
lock; the WebSocket layer takes no caller memory block.
"""

from __future__ import annotations

from typing import Any, Final, final

import trio

from ._base import (
    AttachedMixin,
    ByteStream,
    ConflictDetector,
    Kind,
    MessageStream,
    close_shielded,
    receive_whole,
)
from ._cores._common import DEFAULT_MAX_SIZE, check_int
from ._cores.ws import WebSocketError, WSCore, WSState, check_close
from ._deadline import FOREVER, check_deadline
from ._errors import InvalidArgumentType, MessageTooLarge, NotSupported
from ._transports import begin_attach

__all__ = [
    "WS_BINARY",
    "WS_NOHTTP",
    "WS_TEXT",
    "WSLayer",
    "WSStream",
    "WebSocketError",
    "ws_attach_client",
    "ws_attach_server",
    "ws_detach",
    "ws_done",
    "ws_recv",
    "ws_send",
    "ws_status",
]

WS_BINARY: Final = 0
"""libdill's flag: messages are binary (the default)."""
WS_TEXT: Final = 1
"""libdill's flag: messages are text (UTF-8)."""
WS_NOHTTP: Final = 2
"""libdill's flag: no HTTP upgrade handshake, frames only (combine with ``|``)."""

RECEIVE_SIZE: Final = 65536
"""Bytes moved from the stream below per read."""

_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


@final
class WSStream(AttachedMixin, MessageStream):
    """One end of a WebSocket connection: what ``WSLayer.attach`` returns.

    ::

        ws = await WSLayer(resource="/chat", host="example.org").attach(tls)
        await ws.send("hello")                  # a text message
        reply = await ws.receive()              # str (text) or bytes (binary)
        await ws.send_eof(status=1000, reason="bye")
        tls = await ws.detach()                 # close handshake done; the byte stream back
    """

    __slots__ = (
        "_buffer",
        "_core",
        "_detach_close",
        "_receive_conflict",
        "_send_broken",
        "_send_conflict",
        "_text",
        "_wire",
        "unread_messages",
    )
    _below: ByteStream

    def __init__(self, below: ByteStream, core: WSCore, text: bool) -> None:
        super().__init__()
        self._core = core
        self._text = text
        self._bind(below)
        self._buffer = bytearray(RECEIVE_SIZE)
        self._wire = trio.Lock()
        self._send_broken = False
        self._detach_close = (1000, "")
        self.unread_messages: list[bytes | str] = []
        """Messages that arrived before the peer's close and were unread at detach."""
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )

    def label(self) -> str:
        """``ws(client)`` or ``ws(server)``: this layer's part of a stack's repr."""
        return f"ws({'client' if self._core.client else 'server'})"

    @property
    def core(self) -> WSCore:
        """The sans-IO core (for inspection: its ``state``...; do not feed it)."""
        return self._core

    @property
    def server_side(self) -> bool:
        """True on the server end."""
        return not self._core.client

    @property
    def resource(self) -> str:
        """The resource the client asked for (libdill's ``ws_attach_server`` reports it)."""
        return self._core.resource

    @property
    def host(self) -> str:
        """The host the client named in its request."""
        return self._core.host

    @property
    def close_status(self) -> int | None:
        """The status in the peer's close frame (1005: none given); None before it came."""
        return self._core.peer_status

    @property
    def close_reason(self) -> str:
        """The reason in the peer's close frame; ``""`` before it came or without one."""
        return self._core.peer_reason

    @property
    def pongs_received(self) -> int:
        """How many pongs the peer sent so far (they are read by the receive side)."""
        return self._core.pongs_received

    # --- writing (the one writer at a time) -------------------------------------------------------

    async def _write(self, data: Any, deadline: float) -> None:
        """Send ``data``, then any control bytes the core queued meanwhile (pongs)."""
        wire = self._wire
        if wire.locked():  # the receive task is answering a ping: wait for it
            await wire.acquire()
        else:
            wire.acquire_nowait()
        try:
            await self._below._send_all(data, deadline)
            while control := self._core.data_to_send():
                await self._below._send_all(control, deadline, False)
        except BaseException:
            # Interrupted part-way, the peer may be left mid-frame: no close frame on aclose.
            self._send_broken = True
            raise
        finally:
            wire.release()

    async def _answer(self, deadline: float) -> None:
        """Send what the core must say (handshake answer, pong, failure close) if nobody is
        writing; otherwise the writer sends it after its own bytes."""
        if self._wire.locked() or self._send_broken:
            return
        control = self._core.data_to_send()
        if not control:
            return
        self._wire.acquire_nowait()
        try:
            await self._below._send_all(control, deadline, False)
        except _GONE:
            # The peer cannot hear us any more; what it sent can still be read, so the
            # receive goes on and the next send reports the broken direction.
            self._send_broken = True
        except BaseException:
            self._send_broken = True
            raise
        finally:
            self._wire.release()

    # --- send side --------------------------------------------------------------------------------

    async def send(self, message: Any, deadline: float = FOREVER) -> None:
        """Send one message: a ``str`` as text, bytes-like as binary (``ws_send``)."""
        self._check()
        await self._send(message, deadline, False)

    async def _send_message(self, data: Any, deadline: float = FOREVER) -> None:
        await self._send(data, deadline, self._text)

    async def _send(self, message: Any, deadline: float, text: bool) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            if not isinstance(message, str | bytes | bytearray | memoryview):
                raise InvalidArgumentType(
                    f"a message is str or bytes-like, not {type(message).__name__}"
                )
            await self._write(self._core.encode(message, text=text), checked)

    async def ping(self, payload: Any = b"", deadline: float = FOREVER) -> None:
        """Send a ping (at most 125 bytes); the peer's pong is consumed by the receive side."""
        self._check()
        checked = check_deadline(deadline)
        with self._send_conflict:
            await self._write(self._core.ping(payload), checked)

    # --- receive side -----------------------------------------------------------------------------

    async def receive(self, deadline: float = FOREVER) -> bytes | str | None:
        """One message: ``str`` if the peer sent text, ``bytes`` if binary; None after its close."""
        self._check()
        if self._pushback_messages:
            await trio.lowlevel.checkpoint()
            return self._pushback_messages.popleft()
        return await self._receive_any(deadline)

    async def _receive_next(self, deadline: float = FOREVER) -> bytes | None:
        message = await self._receive_any(deadline)
        return message.encode("utf-8") if isinstance(message, str) else message

    async def _receive_any(self, deadline: float) -> bytes | str | None:
        checked = check_deadline(deadline)
        with self._receive_conflict:
            return await receive_whole(self._core.next_message, self._read, checked)

    async def _read(self, deadline: float) -> bool:
        """Feed the core what the stream below has (waiting if need be); True if it waited.

        Whatever the core has to say in answer (101, 400, a pong, a failure's close) goes out
        before the caller looks at the result.
        """
        view = memoryview(self._buffer)
        n, waited = await self._below._receive_for_owner(view, deadline)
        if n:
            self._core.feed(view[:n])
        else:
            self._core.feed_eof()
        await self._answer(deadline)
        return waited

    async def _handshake(self, deadline: float) -> None:
        """The HTTP upgrade (nothing without HTTP); called once by ``WSLayer.attach``."""
        request = self._core.start()
        if request:
            await self._write(request, deadline)
        else:
            await trio.lowlevel.checkpoint()
        while not self._core.accepted():
            await self._read(deadline)

    # --- done -------------------------------------------------------------------------------------

    async def send_eof(
        self, deadline: float = FOREVER, status: int = 1000, reason: str = ""
    ) -> None:
        """Send this end's close frame with ``status`` and ``reason`` (libdill's ``ws_done``).

        Later sends are :class:`SendAfterDone` (EPIPE); receiving goes on until the peer's
        close. A second call does nothing. Bad ``status``/``reason`` is EINVAL.
        """
        self._check()
        await self._close(status, reason, deadline)

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        await self._close(1000, "", deadline)

    async def _close(self, status: int, reason: str, deadline: float) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            wire = self._core.close(status, reason)
            if wire:
                await self._write(wire, checked)
            else:
                await trio.lowlevel.checkpoint()

    # --- detach -----------------------------------------------------------------------------------

    async def detach(
        self, deadline: float = FOREVER, status: int = 1000, reason: str = ""
    ) -> ByteStream:
        """Complete the close handshake; return the byte stream below (libdill's ``ws_detach``).

        Sends this end's close (``status``, ``reason``) if not yet sent, reads until the
        peer's (messages on the way go to :attr:`unread_messages`), and hands back the stream
        below with the bytes after the peer's close pushed back in front. On failure (deadline,
        cancel, bad input, an end without a close) the whole stack is closed::

            tls = await ws.detach(deadline=after(5))
        """
        self._detach_close = check_close(status, reason)
        below = await self._detach_handle(deadline)
        assert isinstance(below, ByteStream)
        return below

    async def _detach_protocol(self, deadline: float) -> bytes:
        checked = check_deadline(deadline)
        await self._close(*self._detach_close, checked)
        unread: list[bytes | str] = list(self._pushback_messages)
        self._pushback_messages.clear()
        while True:
            try:
                message = await self._receive_any(checked)
            except MessageTooLarge:
                continue  # reported once and skipped, as on any receive
            if message is None:
                break
            unread.append(message)
        self.unread_messages = unread
        return self._core.trailing_data

    async def _close_resources(self) -> None:
        core = self._core
        if (
            not self._send_broken
            and not self._wire.locked()
            and core.state
            in (
                WSState.OPEN,
                WSState.REMOTE_DONE,
            )
        ):
            status = 1000 if core.state is WSState.REMOTE_DONE else 1001  # 1001: going away
            await self._below._send_on_close(bytes(core.close(status, "")))
        await super()._close_resources()


@final
class WSLayer:
    """WebSocket on a byte stream (RFC 6455, libdill's ``ws``): the recipe, checked once.

    ``server_side`` picks the end; a client asks for ``resource`` on ``host``. ``http=False`` is
    libdill's ``WS_NOHTTP``: frames only. ``text=True`` makes ``send_message`` send text
    (libdill's ``WS_TEXT``). ``max_size`` is the largest message this end accepts (a bigger one
    is :class:`MessageTooLarge` and is skipped). Bad parameters are EINVAL::

        ws = await stack.push(WSLayer(resource="/echo", host="localhost"))
        ws = await WSLayer(server_side=True).attach(tls)     # ws.resource, ws.host
    """

    __slots__ = ("_host", "_http", "_max_size", "_resource", "_server_side", "_text")
    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        *,
        server_side: bool = False,
        resource: str = "/",
        host: str = "localhost",
        http: bool = True,
        text: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if not isinstance(server_side, bool) or not isinstance(text, bool):
            raise InvalidArgumentType("server_side and text must be bools")
        self._server_side = server_side
        self._resource = resource
        self._host = host
        self._http = http
        self._text = text
        self._max_size = max_size
        self._core()  # EINVAL now, not at attach

    def _core(self) -> WSCore:
        return WSCore(
            client=not self._server_side,
            http=self._http,
            resource=self._resource,
            host=self._host,
            max_size=self._max_size,
        )

    def __repr__(self) -> str:
        side = "server_side=True" if self._server_side else f"{self._resource!r}, {self._host!r}"
        return f"WSLayer({side}, http={self._http}, text={self._text}, max_size={self._max_size})"

    @property
    def server_side(self) -> bool:
        """True for the server end."""
        return self._server_side

    @property
    def max_size(self) -> int:
        """The largest message the receive side accepts."""
        return self._max_size

    async def attach(self, stream: Any, deadline: float = FOREVER) -> WSStream:
        """Run the handshake on ``stream`` within ``deadline``; the attached message stream.

        A message stream is ProtocolMismatch; a failed handshake WebSocketError (EPROTO); an
        early end ConnectionBroken; a deadline DeadlineExceeded. On any failure ``stream`` (and
        everything below it) is closed.
        """
        checked = check_deadline(deadline)  # EINVAL before the stream is touched
        below = await begin_attach(stream, Kind.BYTES, "ws")
        assert isinstance(below, ByteStream)
        ws = WSStream(below, self._core(), self._text)
        try:
            await ws._handshake(checked)
        except BaseException:
            await close_shielded(ws)
            raise
        return ws


# --- libdill facade -----------------------------------------------------------------------------


def _ws(s: object) -> WSStream:
    if not isinstance(s, WSStream):
        raise NotSupported(f"not a WebSocket layer: {type(s).__name__}")
    return s


def _flags(flags: object) -> tuple[bool, bool]:
    """(text, http) from libdill's flags."""
    value = check_int(flags, "flags", 0, WS_TEXT | WS_NOHTTP)
    return bool(value & WS_TEXT), not value & WS_NOHTTP


async def ws_attach_client(
    s: Any,
    flags: int = WS_BINARY,
    resource: str = "/",
    host: str = "localhost",
    deadline: float = FOREVER,
) -> WSStream:
    """libdill's ``ws_attach_client(s, flags, resource, host, deadline)``.

    >>> ws = await ws_attach_client(tcp, WS_TEXT, "/chat", "example.org", after(5))
    """
    text, http = _flags(flags)
    layer = WSLayer(resource=resource, host=host, http=http, text=text)
    return await layer.attach(s, deadline)


async def ws_attach_server(s: Any, flags: int = WS_BINARY, deadline: float = FOREVER) -> WSStream:
    """libdill's ``ws_attach_server``; what it returns in ``resource``/``host`` is on the stream.

    >>> ws = await ws_attach_server(tcp, WS_BINARY, after(5))
    >>> ws.resource, ws.host
    ('/chat', 'example.org')
    """
    text, http = _flags(flags)
    return await WSLayer(server_side=True, http=http, text=text).attach(s, deadline)


async def ws_send(s: WSStream, flags: int, buf: Any, deadline: float = FOREVER) -> None:
    """libdill's ``ws_send``: ``flags`` is ``WS_TEXT`` or ``WS_BINARY`` (a ``str`` is text)."""
    text, _ = _flags(flags)
    ws = _ws(s)
    ws._check()
    await ws._send(buf, deadline, text)


async def ws_recv(s: WSStream, deadline: float = FOREVER) -> tuple[int, bytes | str] | None:
    """libdill's ``ws_recv``: ``(WS_TEXT, str)`` or ``(WS_BINARY, bytes)``; None after the
    peer's close (libdill's EPIPE)."""
    message = await _ws(s).receive(deadline)
    if message is None:
        return None
    return (WS_TEXT if isinstance(message, str) else WS_BINARY), message


async def ws_done(
    s: WSStream, status: int = 1000, reason: str = "", deadline: float = FOREVER
) -> None:
    """libdill's ``ws_done(s, status, buf, len, deadline)``: send the close frame."""
    await _ws(s).send_eof(deadline, status, reason)


async def ws_detach(
    s: WSStream, status: int = 1000, reason: str = "", deadline: float = FOREVER
) -> ByteStream:
    """libdill's ``ws_detach``: the close handshake, then the byte stream below back."""
    return await _ws(s).detach(deadline, status, reason)


def ws_status(s: WSStream) -> tuple[int, str] | None:
    """libdill's ``ws_status``: the peer's close ``(status, reason)``, None before it came."""
    ws = _ws(s)
    status = ws.close_status
    return None if status is None else (status, ws.close_reason)
