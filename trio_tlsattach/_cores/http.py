"""Sans-IO core of the HTTP header layer (libdill's ``http_attach``), parsing with h11.

Theory of operation
-------------------
libdill's http protocol handles only the head of an HTTP/1.1 message: a start line (request
line or status line), fields, and the blank line that ends them. Whatever follows (a body, a
WebSocket after an upgrade, a tunnel after CONNECT) belongs to the stream below. This core does
both directions of that, with no I/O:

**Send side**: each call returns the wire bytes of one line, validated first (EINVAL, nothing
is produced for a bad argument). The states, driven by an explicit table::

    START  --START_LINE-->  FIELDS  --FIELD-->  FIELDS
    FIELDS --DONE-------->  BODY        (the blank line: libdill's ``http_done``)
    any    --EOF--------->  CLOSED      (the byte stream below is half-closed)

One start line, then fields, then ``done``; after it every head call is :class:`SendAfterDone`
(EPIPE, as libdill's term layer gives). Unlike libdill, ``done`` before a start line is EINVAL
(a lone blank line is no HTTP head) and an empty field value is allowed (RFC 7230); spaces
around a value are dropped, as libdill does.

**Receive side**: :meth:`HTTPCore.feed` takes bytes; :meth:`HTTPCore.next_head` answers
:data:`NEED_DATA` until the whole head is in, then a :class:`Head`. h11 finds the end of the
head and validates it (start line, field names and values, Host, Content-Length and
Transfer-Encoding); it stops there, and its ``trailing_data`` is exactly what followed the
blank line (a body, or what follows a 101/CONNECT, where h11 pauses). For a status line h11 is
told it sent a GET offering an upgrade, so a 101 parses too. The core keeps the raw head bytes
as well: after an error :attr:`HTTPCore.trailing_data` is every byte fed. The first
``next_head(kind)`` with a kind fixes the start line expected; ``HeadKind.AUTO`` (detach, body
reads) decides by the first bytes (``HTTP/``: a status line). Empty lines before the start line
are skipped (RFC 7230 section 3.5). The receive states::

    WAITING --HEAD------>  COMPLETE   (a head was parsed; trailing_data is what follows it)
    WAITING --ENDED----->  ENDED      (clean end of stream before any byte of a head)
    WAITING --ERROR----->  BROKEN     (sticky: the same error on every later call)

Errors: a line over ``max_line_size`` or a head over ``max_header_size`` is
:class:`HeaderTooLarge` (EMSGSIZE), found as bytes arrive (each byte scanned once); a malformed
head :class:`HTTPProtocolError` (EPROTO); the end of stream inside a head
:class:`ConnectionBroken` (ECONNRESET); a field asked for after the last one :class:`PeerDone`
(EPIPE), libdill's end-of-fields signal.

Text is ``str`` as ISO-8859-1 both ways (one character a byte: nothing lost); ``bytes`` are
accepted too. h11 refuses a Transfer-Encoding other than ``chunked`` (``status_hint`` 501).
"""

from __future__ import annotations

import dataclasses
import enum
import errno as _errno
import re
from dataclasses import dataclass
from typing import ClassVar, Final, final

import h11

from .._errors import (
    ConnectionBroken,
    InvalidArgument,
    InvalidArgumentType,
    ProtocolViolation,
    SendAfterDone,
    StackError,
)
from ._common import (
    END_OF_STREAM,
    NEED_DATA,
    BytesLike,
    EndOfStream,
    NeedData,
    StateMachine,
    check_bytes_like,
    check_int,
)

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "HTTPCore",
    "HTTPHeadError",
    "HTTPProtocolError",
    "Head",
    "HeadKind",
    "HeaderTooLarge",
    "PeerDone",
    "ReceiveState",
    "RequestLine",
    "SendState",
    "StatusLine",
]

#: The longest line of a received head (request line, status line or one field), in bytes.
DEFAULT_MAX_LINE_SIZE: Final = 8192
#: The longest received head, start line to blank line included, in bytes.
DEFAULT_MAX_HEADER_SIZE: Final = 65536

# RFC 7230 section 3.2 (the grammar h11 applies to what it receives): field-name = token;
# field-value without surrounding whitespace, no CR, LF or NUL; reason-phrase section 3.1.2.
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE: Final = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_REASON: Final = re.compile(rb"[\t \x21-\x7e\x80-\xff]*")
_STATUS_PREFIX: Final = b"HTTP/"
_CRLF: Final = b"\r\n"


class HTTPHeadError(StackError):
    """The peer's head was refused; :attr:`status_hint` is the status a server answers with.

    The receive side stays broken (the same error again); the send side still works, to answer.
    """

    default_status: ClassVar[int] = 400

    def __init__(self, message: str = "", *, status_hint: int | None = None) -> None:
        super().__init__(message)
        self.status_hint = self.default_status if status_hint is None else status_hint


@final
class HTTPProtocolError(HTTPHeadError, ProtocolViolation):
    """EPROTO: the peer's head is malformed (start line, a field, framing fields, no Host...);
    ``status_hint`` 400, or 501 for a Transfer-Encoding h11 does not support. h11's exception
    is the ``__cause__``. Also a :class:`ProtocolViolation`, so a ``trio.BrokenResourceError``."""


@final
class HeaderTooLarge(HTTPHeadError, ValueError):
    """EMSGSIZE: a line of the peer's head, or the whole head, is over the layer's limit;
    ``status_hint`` 414 for an over-long request line, else 431."""

    default_errno = _errno.EMSGSIZE
    default_status = 431


@final
class PeerDone(StackError, EOFError):
    """EPIPE: nothing more of what was asked for, libdill's end-of-fields signal.

    Raised by ``receive_field`` after the last field of the head (again on every later call),
    and by ``receive_request``/``receive_status`` when the stream ended cleanly before a head
    began (a client closing an idle keep-alive connection).
    """

    default_errno = _errno.EPIPE


class HeadKind(enum.Enum):
    """Which start line the receive side expects."""

    REQUEST = "request"  #: ``GET /path HTTP/1.1``
    STATUS = "status"  #: ``HTTP/1.1 200 OK``
    AUTO = "auto"  #: decided by the first bytes (``HTTP/`` starts a status line)


@final
@dataclass(frozen=True, slots=True)
class RequestLine:
    """A received request line: ``command`` (method), ``resource`` (target), ``version``."""

    command: str
    resource: str
    version: str


@final
@dataclass(frozen=True, slots=True)
class StatusLine:
    """A received status line: ``code``, ``reason`` (may be empty), ``version``."""

    code: int
    reason: str
    version: str


@final
@dataclass(frozen=True, slots=True)
class Head:
    """A whole received head: the start line and the fields, names as the peer wrote them."""

    line: RequestLine | StatusLine
    fields: tuple[tuple[str, str], ...]
    size: int  #: bytes on the wire, start line to blank line included

    @property
    def kind(self) -> HeadKind:
        """``HeadKind.REQUEST`` or ``HeadKind.STATUS``."""
        return HeadKind.REQUEST if isinstance(self.line, RequestLine) else HeadKind.STATUS


class SendState(enum.Enum):
    """Send side: nothing sent, start line sent, head ended (body), stream half-closed."""

    START = "START"
    FIELDS = "FIELDS"
    BODY = "BODY"
    CLOSED = "CLOSED"


class SendEvent(enum.Enum):
    """What moves the send side."""

    START_LINE = "START_LINE"
    FIELD = "FIELD"
    DONE = "DONE"
    EOF = "EOF"


class ReceiveState(enum.Enum):
    """Receive side: waiting for the head, head parsed, ended before a head, broken."""

    WAITING = "WAITING"
    COMPLETE = "COMPLETE"
    ENDED = "ENDED"
    BROKEN = "BROKEN"


class ReceiveEvent(enum.Enum):
    """What moves the receive side."""

    HEAD = "HEAD"
    ENDED = "ENDED"
    ERROR = "ERROR"


_SS, _SE = SendState, SendEvent
SEND_TRANSITIONS: Final = {
    (_SS.START, _SE.START_LINE): _SS.FIELDS,
    (_SS.FIELDS, _SE.FIELD): _SS.FIELDS,
    (_SS.FIELDS, _SE.DONE): _SS.BODY,
    **{(state, _SE.EOF): _SS.CLOSED for state in _SS},
}

_RS, _RE = ReceiveState, ReceiveEvent
RECEIVE_TRANSITIONS: Final = {
    (_RS.WAITING, _RE.HEAD): _RS.COMPLETE,
    (_RS.WAITING, _RE.ENDED): _RS.ENDED,
    (_RS.WAITING, _RE.ERROR): _RS.BROKEN,
}


def _wire(value: object, name: str) -> bytes:
    """``str`` as ISO-8859-1, or a bytes-like as it is; EINVAL otherwise."""
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidArgument(f"{name} has characters outside ISO-8859-1: {value!r}") from None
    return bytes(check_bytes_like(value, name))


@final
class HTTPCore:
    """Both directions of one HTTP head exchange, with no I/O (see the module docstring).

    ``max_line_size`` and ``max_header_size`` bound what is received (ints >= 1; EINVAL).
    """

    __slots__ = (
        "_decided",
        "_error",
        "_fed_eof",
        "_h11",
        "_head",
        "_line_start",
        "_max_header",
        "_max_line",
        "_next_field",
        "_raw",
        "_receive",
        "_scanned",
        "_send",
        "_skipped",
        "_start_taken",
        "_trailing",
    )

    def __init__(
        self,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        self._max_line = check_int(max_line_size, "max_line_size", 1)
        self._max_header = check_int(max_header_size, "max_header_size", 1)
        self._send = StateMachine(SEND_TRANSITIONS, SendState.START)
        self._receive = StateMachine(RECEIVE_TRANSITIONS, ReceiveState.WAITING)
        self._raw = bytearray()  # every byte fed while WAITING: nothing is lost on an error
        self._skipped = 0  # empty lines before the start line (not given to h11)
        self._scanned = 0  # raw bytes already checked for line lengths
        self._line_start = 0  # where the line being scanned began
        self._decided: HeadKind | None = None
        self._h11: h11.Connection | None = None
        self._fed_eof = False
        self._head: Head | None = None
        self._trailing = b""
        self._error: StackError | None = None
        self._start_taken = False
        self._next_field = 0

    def __repr__(self) -> str:
        return f"<HTTPCore send={self.send_state.name} receive={self.receive_state.name}>"

    @property
    def max_line_size(self) -> int:
        """The longest received line accepted, in bytes."""
        return self._max_line

    @property
    def max_header_size(self) -> int:
        """The longest received head accepted, in bytes."""
        return self._max_header

    @property
    def send_state(self) -> SendState:
        """Where the send side is."""
        return self._send.state

    @property
    def receive_state(self) -> ReceiveState:
        """Where the receive side is."""
        return self._receive.state

    @property
    def head(self) -> Head | None:
        """The peer's head once it is complete, else ``None``."""
        return self._head

    # --- send side --------------------------------------------------------------------------------

    def _check_send(self, event: SendEvent) -> None:
        state = self._send.state
        if state is SendState.BODY or state is SendState.CLOSED:
            raise SendAfterDone("the head was already ended with done() (libdill's EPIPE)")
        if event is SendEvent.START_LINE and state is not SendState.START:
            raise InvalidArgument("the start line was already sent")
        if event is not SendEvent.START_LINE and state is SendState.START:
            raise InvalidArgument("send the request line or the status line first")

    def send_request(self, command: object, resource: object) -> bytes:
        """``COMMAND RESOURCE HTTP/1.1`` plus CRLF; EINVAL for a bad method or target."""
        self._check_send(SendEvent.START_LINE)
        method, target = _wire(command, "command"), _wire(resource, "resource")
        try:  # h11 checks the method is a token and the target visible characters only
            h11.Request(method=method, target=target, headers=[("Host", "h")])
        except h11.LocalProtocolError as exc:
            raise InvalidArgument(f"bad request line {method!r} {target!r}: {exc}") from None
        self._send.fire(SendEvent.START_LINE)
        return b"%s %s HTTP/1.1\r\n" % (method, target)

    def send_status(self, code: object, reason: object) -> bytes:
        """``HTTP/1.1 CODE REASON`` plus CRLF; ``code`` 100 to 599 (EINVAL otherwise)."""
        self._check_send(SendEvent.START_LINE)
        status = check_int(code, "status code", 100, 599)
        phrase = _wire(reason, "reason")
        if not _REASON.fullmatch(phrase):
            raise InvalidArgument(f"reason phrase has a control character: {phrase!r}")
        self._send.fire(SendEvent.START_LINE)
        return b"HTTP/1.1 %d %s\r\n" % (status, phrase)

    def send_field(self, name: object, value: object) -> bytes:
        """``Name: value`` plus CRLF; EINVAL for a name that is not a token or a value holding
        CR, LF or NUL. Spaces around the value are dropped, as libdill does."""
        self._check_send(SendEvent.FIELD)
        raw_name = _wire(name, "field name")
        raw_value = _wire(value, "field value").strip(b" \t")
        if not _TOKEN.fullmatch(raw_name):
            raise InvalidArgument(f"field name must be an RFC 7230 token: {raw_name!r}")
        if not _FIELD_VALUE.fullmatch(raw_value):
            raise InvalidArgument(f"field value has CR, LF or NUL: {raw_value!r}")
        self._send.fire(SendEvent.FIELD)
        return b"%s: %s\r\n" % (raw_name, raw_value)

    def send_done(self) -> bytes:
        """The blank line that ends the head (libdill's ``http_done``); EPIPE if already sent."""
        self._check_send(SendEvent.DONE)
        self._send.fire(SendEvent.DONE)
        return _CRLF

    def check_body(self) -> None:
        """Raise unless body bytes may be sent now (after ``done``, before the end)."""
        state = self._send.state
        if state is SendState.CLOSED:
            raise SendAfterDone("send after send_eof()")
        if state is not SendState.BODY:
            raise InvalidArgument("end the head with done() before sending body bytes")

    def send_eof(self) -> bytes:
        """The stream below is being half-closed: the blank line first if a head is open."""
        ending = _CRLF if self._send.state is SendState.FIELDS else b""
        self._send.fire(SendEvent.EOF)
        return ending

    # --- receive side -----------------------------------------------------------------------------

    @property
    def trailing_data(self) -> bytes:
        """Received bytes not part of a returned head, in stream order.

        After the head: what followed it (the body's first bytes). Before it, or after an error:
        every byte fed, untouched.
        """
        if self._receive.state is ReceiveState.COMPLETE:
            return self._trailing
        return bytes(self._raw)

    def feed(self, data: BytesLike) -> None:
        """Bytes from the stream below; EINVAL once the head is complete or after the end."""
        check_bytes_like(data, "data")
        if self._fed_eof:
            raise InvalidArgument("feed() after feed_eof()")
        if self._receive.state is not ReceiveState.WAITING:
            raise InvalidArgument(f"feed() with the receive side {self.receive_state.name}")
        self._raw += data
        if self._h11 is not None and data:  # h11 takes b"" as the end of stream
            self._h11.receive_data(bytes(data))

    def feed_eof(self) -> None:
        """The stream below ended; calling it again changes nothing.

        h11 is not told: the core itself tells a clean end (nothing but empty lines before it)
        from an end inside the head.
        """
        self._fed_eof = True

    def next_head(self, kind: HeadKind = HeadKind.AUTO) -> Head | NeedData | EndOfStream:
        """The peer's head, :data:`NEED_DATA`, or :data:`END_OF_STREAM` (ended before a head).

        ``kind`` fixes which start line is expected if nothing has yet; a head of the other
        kind is :class:`HTTPProtocolError` (not sticky: the head stays for the right call).
        """
        if not isinstance(kind, HeadKind):
            raise InvalidArgumentType(f"kind must be a HeadKind, not {type(kind).__name__}")
        state = self._receive.state
        if state is ReceiveState.WAITING:
            try:
                result = self._parse(kind)
            except StackError as exc:
                self._error = exc
                self._receive.fire(ReceiveEvent.ERROR)
                raise
        elif state is ReceiveState.BROKEN:
            assert self._error is not None
            raise self._error.with_traceback(None)  # sticky, without piling up tracebacks
        else:
            result = END_OF_STREAM if self._head is None else self._head
        if isinstance(result, Head) and kind is not HeadKind.AUTO and result.kind is not kind:
            raise HTTPProtocolError(
                f"expected a {kind.value} line, received a {result.kind.value} line"
            )
        return result

    def take_start_line(self, kind: HeadKind) -> RequestLine | StatusLine:
        """The start line of the complete head, once (EINVAL the second time); PeerDone
        (EPIPE) if the stream ended before a head began."""
        head = self.next_head(kind)
        if head is END_OF_STREAM:
            raise PeerDone("the stream ended before a head began")
        if not isinstance(head, Head):
            raise InvalidArgument("the head is not complete")
        if self._start_taken:
            raise InvalidArgument("start line already received; attach again for the next head")
        self._start_taken = True
        return head.line

    def next_field(self) -> tuple[str, str]:
        """The next field of the complete head; :class:`PeerDone` (EPIPE) after the last."""
        fields = self._unread_fields()
        if not fields:
            raise PeerDone("no more fields in this head")
        self._next_field += 1
        return fields[0]

    def remaining_fields(self) -> list[tuple[str, str]]:
        """Every field not yet returned by :meth:`next_field` (they count as returned now)."""
        fields = self._unread_fields()
        self._next_field += len(fields)
        return list(fields)

    def _unread_fields(self) -> tuple[tuple[str, str], ...]:
        if self._head is None or not self._start_taken:
            raise InvalidArgument("receive the request line or the status line first")
        return self._head.fields[self._next_field :]

    # --- parsing ----------------------------------------------------------------------------------

    def _parse(self, kind: HeadKind) -> Head | NeedData | EndOfStream:
        if self._decided is None and kind is not HeadKind.AUTO:
            self._decided = kind
        if self._h11 is None:
            self._skip_empty_lines()
            seen = self._auto_kind()
            if seen is None:
                return self._need_data()
            self._decided = self._decided or seen
            self._h11 = self._start_h11(self._decided)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            # h11 consumed the head it refused; an over-long line in it is the clearer error.
            consumed = len(self._raw) - len(self._h11.trailing_data[0])
            self._scan(consumed if consumed > self._skipped else len(self._raw))
            if exc.error_status_hint == 431:
                raise HeaderTooLarge(f"the head is too large: {exc}") from exc
            raise HTTPProtocolError(
                f"malformed HTTP head: {exc}", status_hint=exc.error_status_hint
            ) from exc
        if event is h11.NEED_DATA:
            return self._need_data()
        trailing, _ = self._h11.trailing_data
        size = len(self._raw) - len(trailing)
        self._scan(size)
        self._head = _head_of(event, size - self._skipped)
        self._trailing = trailing
        self._raw.clear()
        self._receive.fire(ReceiveEvent.HEAD)
        return self._head

    def _need_data(self) -> NeedData | EndOfStream:
        """No whole head yet: check the limits on what is there, and the end of stream."""
        self._scan(len(self._raw))
        if self._fed_eof:
            if len(self._raw) == self._skipped:
                self._receive.fire(ReceiveEvent.ENDED)
                return END_OF_STREAM
            raise ConnectionBroken(f"the stream ended inside the head ({len(self._raw)} bytes)")
        return NEED_DATA

    def _skip_empty_lines(self) -> None:
        """Count CRLF (or LF) lines in front of the start line; h11 never sees them."""
        raw, pos = self._raw, self._skipped
        while True:
            if raw.startswith(b"\r\n", pos):
                pos += 2
            elif raw.startswith(b"\n", pos):
                pos += 1
            else:
                break
        self._skipped = pos
        self._scanned = max(self._scanned, pos)
        self._line_start = max(self._line_start, pos)

    def _auto_kind(self) -> HeadKind | None:
        """``HTTP/`` starts a status line, anything else a request line; None: too early to
        tell, or to tell an empty line from the start line."""
        start = bytes(self._raw[self._skipped : self._skipped + len(_STATUS_PREFIX)])
        if start == b"\r" or (_STATUS_PREFIX.startswith(start) and start != _STATUS_PREFIX):
            return None  # a lone CR may still become an empty line; a prefix may become HTTP/
        return HeadKind.STATUS if start == _STATUS_PREFIX else HeadKind.REQUEST

    def _start_h11(self, kind: HeadKind) -> h11.Connection:
        if kind is HeadKind.REQUEST:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header)
        else:
            # h11 parses a response only after a request; an upgrade offer lets a 101 through.
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header)
            offer = [("Host", "peer"), ("Connection", "upgrade"), ("Upgrade", "any")]
            conn.send(h11.Request(method="GET", target="/", headers=offer))
        if len(self._raw) > self._skipped:  # h11 takes b"" as the end of stream
            conn.receive_data(bytes(self._raw[self._skipped :]))
        return conn

    def _scan(self, end: int) -> None:
        """Check line and head lengths over ``raw[:end]``; each byte is scanned once."""
        raw, pos, start = self._raw, self._scanned, self._line_start
        while pos < end:
            newline = raw.find(b"\n", pos, end)
            stop = end if newline < 0 else newline
            length = stop - start - (1 if stop > start and raw[stop - 1] == 13 else 0)
            if length > self._max_line:
                first = start == self._skipped
                raise HeaderTooLarge(
                    f"a line of the head is over max_line_size={self._max_line} bytes",
                    status_hint=414 if first and self._decided is HeadKind.REQUEST else 431,
                )
            if newline < 0:
                pos = end
            else:
                pos = start = newline + 1
        self._scanned, self._line_start = pos, start
        if end > self._max_header:  # empty lines in front count: they cannot pile up
            raise HeaderTooLarge(f"the head is over max_header_size={self._max_header} bytes")


def _head_of(event: object, size: int) -> Head:
    """Our :class:`Head` from h11's event (names as the peer wrote them)."""
    if not isinstance(event, h11.Request | h11.Response | h11.InformationalResponse):
        raise HTTPProtocolError(
            f"unexpected {event!r} where a head was expected"
        )  # pragma: no cover
    line: RequestLine | StatusLine
    if isinstance(event, h11.Request):
        line = RequestLine(event.method.decode("latin-1"), event.target.decode("latin-1"), "")
    else:
        line = StatusLine(event.status_code, event.reason.decode("latin-1"), "")
    version = event.http_version.decode("latin-1")
    fields = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers.raw_items())
    return Head(dataclasses.replace(line, version=version), fields, size)
