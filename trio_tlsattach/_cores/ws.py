"""Sans-IO core of the WebSocket layer (RFC 6455, libdill's ``ws``), on wsproto.

Theory of operation
-------------------
Bytes go in through :meth:`WSCore.feed` / :meth:`WSCore.feed_eof`; messages come out of
:meth:`WSCore.next_message` (``bytes`` for a binary message, ``str`` for a text message);
:meth:`WSCore.encode`, :meth:`WSCore.close` and :meth:`WSCore.ping` turn what this end says
into wire bytes; :meth:`WSCore.data_to_send` hands out what the core itself must say (the
server's ``101`` answer, a pong for each ping, the close frame that fails a connection). Nothing
here does I/O or imports Trio.

wsproto does the protocol work, in two modes:

* **HTTP upgrade** (the default): a :class:`wsproto.WSConnection` runs the handshake, on h11.
  The client's request (``GET resource``, ``Host: host``) comes from :meth:`WSCore.start`; the
  server accepts any request and reports the ``resource`` and ``host`` it asked for, as
  libdill's ``ws_attach_server`` does. Bytes that follow the handshake in the same read are
  parsed as frames.
* **No HTTP** (libdill's ``WS_NOHTTP``): frames only, the handshake was done elsewhere; a
  :class:`wsproto.connection.Connection` from the first byte.

Either way incoming frames are parsed by wsproto's ``Connection``, which enforces the masking
rules (a server receiving an unmasked frame, a client a masked one: protocol error), reserved
bits, opcodes, control-frame sizes, close codes, and UTF-8 in text (incrementally). wsproto
reports a parse failure as a ``CloseConnection`` event without leaving its ``OPEN`` state, and a
real close frame by moving to ``REMOTE_CLOSING``: that is how the two are told apart. Outgoing
frames are built by a separate :class:`wsproto.frame_protocol.FrameProtocol` (the encoder
``Connection.send`` uses), because this core keeps libdill's half-close model, which wsproto's
send side refuses: after the peer's close this end may still send until it closes too.

wsproto hands payload over as it arrives (partial frames); the core reassembles fragments into
one message and counts its size: past ``max_size`` the message is reported once as
:class:`MessageTooLarge` (EMSGSIZE), its remaining fragments are dropped as they come, and the
next message is read normally. What the peer sent is kept in order in one queue: messages, the
EMSGSIZE report, and finally a :class:`WebSocketError` (EPROTO) for bad input, which is raised
only after every message before it was delivered, and then on every later call.

States (:class:`WSState`, one table, :data:`TRANSITIONS`)::

    HANDSHAKE   --ACCEPTED-------->  OPEN
    OPEN        --CLOSE_SENT------>  LOCAL_DONE   (our close sent: sends are EPIPE)
    OPEN        --CLOSE_RECEIVED-->  REMOTE_DONE  (the peer's close: end of messages)
    LOCAL_DONE  --CLOSE_RECEIVED-->  CLOSED
    REMOTE_DONE --CLOSE_SENT------>  CLOSED
    HANDSHAKE, OPEN, LOCAL_DONE --PROTOCOL_ERROR-->  FAILED   (sticky EPROTO)
    HANDSHAKE, OPEN, LOCAL_DONE --EOF------------->  BROKEN   (sticky ECONNRESET)

After the peer's close frame the byte stream is no longer WebSocket: every byte that follows
it (in the same read or later) is kept untouched in :attr:`WSCore.trailing_data`, which the
layer's detach pushes back in front of the stream below.

Per-connection state: wsproto's handshake and connection objects (their buffers), the encoder,
the message being reassembled, the queue of what was received, the bytes to send, the
trailing bytes, the peer's close status and reason.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Final, NoReturn, cast, final

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol
from wsproto.utilities import ProtocolError

from .._errors import (
    ConnectionBroken,
    InvalidArgument,
    InvalidArgumentType,
    MessageTooLarge,
    ProtocolViolation,
    SendAfterDone,
    StackError,
)
from ._common import (
    DEFAULT_MAX_SIZE,
    END_OF_STREAM,
    NEED_DATA,
    BytesLike,
    EndOfStream,
    NeedData,
    StateMachine,
    check_bytes_like,
    check_int,
)

__all__ = ["TRANSITIONS", "WSCore", "WSEvent", "WSState", "WebSocketError", "check_close"]


@final
class WebSocketError(ProtocolViolation):
    """EPROTO: the WebSocket peer broke the protocol, or the upgrade handshake failed.

    Raised for a malformed upgrade request or response, a wrong ``Sec-WebSocket-Accept``, an
    over-long header, a frame with reserved bits set or a bad mask, a text message that is not
    valid UTF-8, a bad close frame. The receive direction is failed for good (errors are
    sticky), but every message that arrived before the bad input was delivered first.

    :attr:`close_code` is the status this end put in the close frame it sent back (1002
    protocol error, 1007 invalid payload data), or ``None`` when the handshake failed.
    """

    def __init__(self, message: str = "", *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class WSState(enum.Enum):
    """States of a WebSocket connection, as seen by one end."""

    HANDSHAKE = "HANDSHAKE"  #: the HTTP upgrade is under way
    OPEN = "OPEN"  #: messages flow both ways
    LOCAL_DONE = "LOCAL_DONE"  #: this end sent its close; the peer may still send
    REMOTE_DONE = "REMOTE_DONE"  #: the peer sent its close; this end may still send
    CLOSED = "CLOSED"  #: both closes went (final)
    FAILED = "FAILED"  #: bad input from the peer (final, sticky EPROTO)
    BROKEN = "BROKEN"  #: the stream ended without the peer's close (final, sticky ECONNRESET)


class WSEvent(enum.Enum):
    """What moves a :class:`WSCore` from one :class:`WSState` to another."""

    ACCEPTED = "ACCEPTED"  #: the upgrade handshake completed (or there is none)
    CLOSE_SENT = "CLOSE_SENT"  #: this end's close frame was encoded
    CLOSE_RECEIVED = "CLOSE_RECEIVED"  #: the peer's close frame was parsed
    PROTOCOL_ERROR = "PROTOCOL_ERROR"  #: the peer's bytes broke the protocol
    EOF = "EOF"  #: the stream below ended before the peer's close


_S, _E = WSState, WSEvent

#: ``(state, event) -> new state``.
TRANSITIONS: Final = {
    (_S.HANDSHAKE, _E.ACCEPTED): _S.OPEN,
    (_S.OPEN, _E.CLOSE_SENT): _S.LOCAL_DONE,
    (_S.OPEN, _E.CLOSE_RECEIVED): _S.REMOTE_DONE,
    (_S.LOCAL_DONE, _E.CLOSE_RECEIVED): _S.CLOSED,
    (_S.REMOTE_DONE, _E.CLOSE_SENT): _S.CLOSED,
    **{(s, _E.PROTOCOL_ERROR): _S.FAILED for s in (_S.HANDSHAKE, _S.OPEN, _S.LOCAL_DONE)},
    **{(s, _E.EOF): _S.BROKEN for s in (_S.HANDSHAKE, _S.OPEN, _S.LOCAL_DONE)},
}

#: States in which the peer's frames are still being parsed.
_RECEIVING: Final = frozenset({_S.OPEN, _S.LOCAL_DONE})
#: States in which this end may still send messages.
_SENDING: Final = frozenset({_S.OPEN, _S.REMOTE_DONE})

#: What a server answers to a request that is not a WebSocket upgrade.
BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

#: Close codes an endpoint may not put on the wire (RFC 6455 section 7.4.1).
_LOCAL_ONLY: Final = frozenset({1004, 1005, 1006, 1015})
#: Longest close reason: a control frame carries at most 125 bytes, 2 of them the code.
MAX_REASON: Final = 123

_Received = bytes | str | StackError


def check_close(status: object, reason: object) -> tuple[int, str]:
    """Validate a close status and reason this end sends; EINVAL when the peer would refuse.

    ``status`` is 1000-1003, 1007-1014 or 3000-4999; ``reason`` a ``str`` of at most 123
    bytes in UTF-8.
    """
    code = check_int(status, "status", 1000, 4999)
    if code in _LOCAL_ONLY or 1016 <= code < 3000:
        raise InvalidArgument(f"close status {code} may not be sent")
    if not isinstance(reason, str):
        raise InvalidArgumentType(f"reason must be a str, not {type(reason).__name__}")
    if len(reason.encode("utf-8")) > MAX_REASON:
        raise InvalidArgument(f"close reason is over {MAX_REASON} bytes in UTF-8")
    return code, reason


def _unparsed(connection: Connection) -> bytes:
    """Bytes wsproto holds past the last frame it parsed (after a close frame: the rest).

    wsproto stops parsing at a close frame and keeps what follows in its frame decoder's
    buffer; it has no public accessor, and the layer's detach must give those bytes back.
    tests/test_core_ws.py pins this against the installed wsproto.
    """
    return bytes(connection._proto._frame_decoder.buffer.buffer)


def _after_request(handshake: WSConnection) -> bytes:
    """Bytes a client sent right behind its upgrade request (frames it did not wait to send).

    wsproto's server side leaves them in its h11 connection (its client side passes the
    equivalent on); tests/test_core_ws.py checks they are parsed as frames.
    """
    return bytes(handshake.handshake._h11_connection.trailing_data[0])


@final
class WSCore:
    """One end of a WebSocket connection, sans-IO: handshake, frames, close, all on wsproto.

    ``client`` chooses the side; ``http=False`` is libdill's ``WS_NOHTTP`` (frames only).
    ``resource`` and ``host`` are the client's request line and ``Host`` header; ``max_size``
    is the largest message the receive side accepts. Bad arguments are EINVAL.
    """

    __slots__ = (
        "_client",
        "_connection",
        "_encoder",
        "_eof",
        "_handshake",
        "_machine",
        "_max_size",
        "_outgoing",
        "_parts",
        "_peer_reason",
        "_peer_status",
        "_pongs",
        "_received",
        "_size",
        "_skipping",
        "_text",
        "_trailing",
        "host",
        "resource",
    )

    def __init__(
        self,
        *,
        client: bool,
        http: bool = True,
        resource: str = "/",
        host: str = "localhost",
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if not isinstance(client, bool) or not isinstance(http, bool):
            raise InvalidArgumentType("client and http must be bools")
        for name, value in (("resource", resource), ("host", host)):
            if not isinstance(value, str) or not value.isprintable() or " " in value:
                raise InvalidArgument(f"{name} must be a printable str without spaces")
        if not resource.startswith("/"):
            raise InvalidArgument(f"resource must start with '/', not {resource!r}")
        self._max_size = check_int(max_size, "max_size", 1)
        self._client = client
        kind = ConnectionType.CLIENT if client else ConnectionType.SERVER
        self._encoder = FrameProtocol(client, [])
        self._handshake = WSConnection(kind) if http else None
        self._connection = None if http else Connection(kind)
        self._machine = StateMachine(TRANSITIONS, WSState.HANDSHAKE)
        if not http:
            self._machine.fire(WSEvent.ACCEPTED)
        #: The resource (path) the client asked for; on a server, known once accepted.
        self.resource = resource if client or not http else ""
        #: The host the client named; on a server, known once accepted.
        self.host = host if client or not http else ""
        self._eof = False
        self._received: deque[_Received] = deque()
        self._outgoing = bytearray()
        self._trailing = bytearray()
        self._parts: list[bytes | str] = []
        self._size = 0
        self._text = False
        self._skipping = False
        self._peer_status: int | None = None
        self._peer_reason = ""
        self._pongs = 0

    def __repr__(self) -> str:
        side = "client" if self._client else "server"
        return f"<WSCore {side} state={self.state.name} queued={len(self._received)}>"

    # --- state ------------------------------------------------------------------------------------

    @property
    def state(self) -> WSState:
        """The current :class:`WSState`."""
        return self._machine.state

    @property
    def client(self) -> bool:
        """True on the client side (which masks what it sends)."""
        return self._client

    @property
    def max_size(self) -> int:
        """The largest message the receive side accepts, in bytes (UTF-8 bytes for text)."""
        return self._max_size

    @property
    def peer_status(self) -> int | None:
        """The status in the peer's close frame (1005 if it had none); ``None`` before it."""
        return self._peer_status

    @property
    def peer_reason(self) -> str:
        """The reason in the peer's close frame (``""`` before it or without one)."""
        return self._peer_reason

    @property
    def pongs_received(self) -> int:
        """How many pongs the peer sent (answers to :meth:`ping`, or unsolicited)."""
        return self._pongs

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the peer's close frame: no longer WebSocket, the rest of the
        byte stream (what detach pushes back). Empty before the peer's close."""
        return bytes(self._trailing)

    # --- handshake --------------------------------------------------------------------------------

    def start(self) -> bytes:
        """The client's upgrade request (send it first); ``b""`` for a server or without HTTP."""
        if self._handshake is None or not self._client:
            return b""
        return self._handshake.send(Request(host=self.host, target=self.resource))

    def accepted(self) -> bool:
        """True once the handshake is done; False while it needs bytes.

        Raises :class:`WebSocketError` when it failed (the server then has a ``400`` answer
        in :meth:`data_to_send`) and :class:`ConnectionBroken` when the stream ended first.
        """
        if self._connection is not None:
            return True  # bad input right behind the handshake is for next_message to raise
        if self._machine.state is WSState.HANDSHAKE:
            return False
        self._raise_final()

    def _feed_handshake(self, data: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        try:
            handshake.receive_data(data)
            for event in handshake.events():
                if isinstance(event, Request):
                    self.resource, self.host = event.target, event.host
                    self._outgoing += handshake.send(AcceptConnection())
                    assert handshake.connection is not None
                    handshake.connection.receive_data(_after_request(handshake))
                    break
                if isinstance(event, AcceptConnection):
                    break
                if isinstance(event, RejectConnection):
                    self._fail(f"the server refused the upgrade with status {event.status_code}")
                    return
            else:
                return  # more of the request or response to come
        except ProtocolError as exc:
            if not self._client:
                self._outgoing += BAD_REQUEST
            self._fail(f"bad WebSocket upgrade: {exc}")
            return
        self._connection = handshake.connection
        self._machine.fire(WSEvent.ACCEPTED)
        self._parse()  # frames that came in the same read as the handshake

    # --- receive side -----------------------------------------------------------------------------

    def feed(self, data: BytesLike) -> None:
        """Append bytes received from the stream below. EINVAL after :meth:`feed_eof`.

        Bad input is not raised here: it is queued, and :meth:`next_message` raises it after
        the messages that came before it.
        """
        check_bytes_like(data, "data")
        if self._eof:
            raise InvalidArgument("feed() after feed_eof()")
        if not data:
            return  # h11 would take b"" for the end of the stream
        state = self._machine.state
        if state is WSState.HANDSHAKE:
            self._feed_handshake(bytes(data))
        elif state in _RECEIVING:
            assert self._connection is not None
            self._connection.receive_data(bytes(data))
            self._parse()
        elif state is not WSState.FAILED:
            self._trailing += data  # after the peer's close: not ours to parse

    def feed_eof(self) -> None:
        """The byte stream below ended. Before the peer's close that breaks the connection."""
        if self._eof:
            return
        self._eof = True
        if self._machine.state in (WSState.HANDSHAKE, *_RECEIVING):
            self._machine.fire(WSEvent.EOF)
            self._received.append(
                ConnectionBroken("the stream ended without a WebSocket close frame")
            )

    def next_message(self) -> bytes | str | NeedData | EndOfStream:
        """The next message (``bytes`` binary, ``str`` text), NEED_DATA or END_OF_STREAM.

        END_OF_STREAM (sticky) once the peer's close frame was read. Raises
        :class:`MessageTooLarge` once per oversized message (then skipped),
        :class:`WebSocketError` for bad input and :class:`ConnectionBroken` for an end without
        a close, the last two again on every later call.
        """
        if self._received:
            item = self._received.popleft()
            if isinstance(item, StackError):
                if not isinstance(item, MessageTooLarge):
                    self._received.appendleft(item)  # sticky
                raise item
            return item
        if self._machine.state is WSState.REMOTE_DONE or self._machine.state is WSState.CLOSED:
            return END_OF_STREAM
        return NEED_DATA

    @property
    def pending_messages(self) -> list[bytes | str]:
        """Messages parsed but not yet returned by :meth:`next_message`, in order."""
        return [m for m in self._received if not isinstance(m, StackError)]

    def _parse(self) -> None:
        connection = self._connection
        assert connection is not None
        for event in connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                self._on_data(event)
            elif isinstance(event, Ping):
                if self._machine.state in _SENDING:
                    self._outgoing += self._encoder.pong(event.payload)
            elif isinstance(event, CloseConnection):
                if connection.state is ConnectionState.OPEN:  # a parse failure, not a close
                    self._fail(f"WebSocket protocol error: {event.reason}", event.code)
                else:
                    self._peer_status, self._peer_reason = event.code, event.reason or ""
                    self._machine.fire(WSEvent.CLOSE_RECEIVED)
                    self._trailing += _unparsed(connection)
                return
            else:  # a Pong: an answer to a ping of ours
                self._pongs += 1

    def _on_data(self, event: TextMessage | BytesMessage) -> None:
        data: bytes | str = (
            event.data if not isinstance(event.data, bytearray) else bytes(event.data)
        )
        if self._skipping:
            self._skipping = not event.message_finished
            return
        if not self._parts:
            self._text = isinstance(event, TextMessage)
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        self._size += size
        if self._size > self._max_size:
            self._received.append(
                MessageTooLarge(
                    f"message of more than {self._max_size} bytes is over max_size; skipped"
                )
            )
            self._parts.clear()
            self._size = 0
            self._skipping = not event.message_finished
            return
        if not event.message_finished:
            self._parts.append(data)
            return
        if self._parts:
            self._parts.append(data)
            parts, self._parts = self._parts, []
            if self._text:
                data = "".join(cast("list[str]", parts))
            else:
                data = b"".join(cast("list[bytes]", parts))
        self._size = 0
        self._received.append(data)

    def _fail(self, message: str, code: int | None = None) -> None:
        """Bad input: queue the error after what came before, and say why with a close frame."""
        if code is not None and self._machine.state is WSState.OPEN:
            self._outgoing += self._encoder.close(code, message)  # wsproto trims the reason
        self._machine.fire(WSEvent.PROTOCOL_ERROR)
        self._received.append(WebSocketError(message, close_code=code))

    def _raise_final(self) -> NoReturn:
        for item in self._received:
            if not isinstance(item, MessageTooLarge) and isinstance(item, StackError):
                raise item
        raise ConnectionBroken("the WebSocket connection failed")  # pragma: no cover

    # --- send side --------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes the core itself must send (handshake answer, pongs, a failure's close)."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _check_send(self) -> None:
        state = self._machine.state
        if state in _SENDING:
            return
        if state is WSState.LOCAL_DONE or state is WSState.CLOSED:
            raise SendAfterDone("send after this end's WebSocket close")
        if state is WSState.HANDSHAKE:
            raise InvalidArgument("send before the WebSocket handshake completed")
        self._raise_final()

    def encode(self, message: BytesLike | str, *, text: bool = False) -> bytes | bytearray:
        """Wire bytes for one message: ``str`` as text, bytes-like as binary.

        ``text=True`` sends bytes-like data as a text message; it must be valid UTF-8
        (EINVAL otherwise, before anything is sent). EPIPE after this end's close.
        """
        if isinstance(message, str):
            payload: bytes | bytearray | str = message
        else:
            data = check_bytes_like(message, "message")
            payload = data if isinstance(data, bytes | bytearray) else bytes(data)
            if text:
                try:
                    payload = bytes(payload).decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidArgument("a text message must be valid UTF-8") from None
        self._check_send()
        return self._encoder.send_data(payload, True)

    def ping(self, payload: BytesLike = b"") -> bytes | bytearray:
        """Wire bytes for a ping (at most 125 bytes of payload; the peer answers with a pong)."""
        data = bytes(check_bytes_like(payload, "payload"))
        if len(data) > 125:
            raise InvalidArgument("a ping payload is at most 125 bytes")
        self._check_send()
        return self._encoder.ping(data)

    def close(self, status: int = 1000, reason: str = "") -> bytes | bytearray:
        """Wire bytes for this end's close frame (libdill's ``ws_done``); then sends are EPIPE.

        A second call returns ``b""``: the close went already.
        """
        code, text = check_close(status, reason)
        state = self._machine.state
        if state is WSState.LOCAL_DONE or state is WSState.CLOSED:
            return b""
        self._check_send()
        self._machine.fire(WSEvent.CLOSE_SENT)
        return self._encoder.close(code, text)
