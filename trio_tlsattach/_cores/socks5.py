"""Sans-IO core of SOCKS5 (RFC 1928) with username/password authentication (RFC 1929).

Theory of operation
-------------------
A SOCKS5 conversation is six messages, strictly in turn, then the tunnel::

    client                                     proxy
    greeting      05 NMETHODS METHODS...   ->
                                           <-  05 METHOD             method choice
    auth request  01 ULEN UNAME PLEN PASSWD ->                       (only if METHOD = 02)
                                           <-  01 STATUS             auth reply
    request       05 CMD 00 ATYP ADDR PORT ->
                                           <-  05 REP 00 ATYP ADDR PORT   reply
    ... from here on the stream carries the tunnelled bytes ...

``ATYP`` is 01 (4-byte IPv4), 04 (16-byte IPv6) or 03 (one length byte, then a domain name);
ports are big-endian. :class:`SOCKS5Core` is one end of that conversation (``Role.CLIENT`` or
``Role.PROXY``): ``send_*`` methods return the wire bytes of this end's messages, ``feed()``
takes the peer's bytes and ``next_event()`` returns the peer's next message (a frozen
dataclass) or :data:`NEED_DATA`. Both ends walk the same table, one event per message, so the
state says whose turn it is::

    GREETING   --GREETING-------->  METHOD
    METHOD     --NO_AUTH--------->  REQUEST
    METHOD     --USERPASS-------->  AUTH
    METHOD     --NO_METHOD------->  FAILED       (05 FF: nothing acceptable)
    AUTH       --AUTH------------>  AUTH_REPLY
    AUTH_REPLY --AUTH_OK--------->  REQUEST
    AUTH_REPLY --AUTH_FAILED----->  FAILED
    REQUEST    --REQUEST--------->  REPLY
    REQUEST    --BAD_REQUEST----->  REPLY        (unknown command or address type: the proxy
                                                  still answers 07 or 08, then it is over)
    REPLY      --REPLY_OK-------->  ESTABLISHED  (trailing_data: the tunnel's first bytes)
    REPLY      --REPLY_FAILED---->  FAILED
    any        --ERROR----------->  FAILED       (malformed message, or EOF in the handshake)

A core may start at ``GREETING`` or ``REQUEST``: libdill's proxy side reads the greeting and the
request in separate calls (``socks5_proxy_auth``, ``socks5_proxy_recvcommand``).

Validation is strict and early: a wrong version byte, a nonzero reserved byte, an empty method
list or domain name, a domain name that is not UTF-8 or holds a NUL byte, or a method choice
the client did not offer raise :class:`SOCKS5ProtocolError` (EPROTO) as soon as the offending
byte is fed, without waiting for the rest. An unknown command or address type in a request is
EPROTO too (as in libdill), carrying in :attr:`SOCKS5ProtocolError.reply` the reply code
(07 or 08) the proxy should still send. The peer closing mid-handshake is
:class:`ConnectionBroken` (ECONNRESET).

Nothing is read past the message the state expects: :attr:`SOCKS5Core.trailing_data` is the rest
of the byte stream, to be pushed back in front of it (the tunnel's early bytes are not lost).

:class:`SOCKS5ProtocolError` lives here, at the bottom of the import order, because the core
raises it; what a refusal means in errnos is the business of ``_socks5``, libdill's API.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final, final

from .._errors import (
    ConnectionBroken,
    InvalidArgument,
    InvalidArgumentType,
    ProtocolViolation,
)
from ._common import (
    NEED_DATA,
    BytesLike,
    NeedData,
    ReceiveBuffer,
    StateMachine,
    check_bytes_like,
    check_int,
)

__all__ = [
    "ADDRESS_TYPE_NOT_SUPPORTED", "ATYP_IPV4", "ATYP_IPV6", "ATYP_NAME", "BIND",
    "COMMAND_NOT_SUPPORTED", "CONNECT", "CONNECTION_NOT_ALLOWED", "CONNECTION_REFUSED",
    "GENERAL_FAILURE", "HOST_UNREACHABLE", "METHOD_NONE", "METHOD_NO_AUTH", "METHOD_USERPASS",
    "NETWORK_UNREACHABLE", "SUCCESS", "TTL_EXPIRED", "UDP_ASSOCIATE", "AuthReply", "AuthRequest",
    "Greeting", "MethodChoice", "Reply", "Request", "Role", "SOCKS5Core",
    "SOCKS5Event", "SOCKS5ProtocolError", "SOCKS5State",
    "credential_bytes", "encode_address", "encode_reply",
]  # fmt: skip

VERSION: Final = 0x05
AUTH_VERSION: Final = 0x01  # RFC 1929's subnegotiation version

METHOD_NO_AUTH: Final = 0x00
METHOD_USERPASS: Final = 0x02
METHOD_NONE: Final = 0xFF  # "no acceptable methods"

CONNECT: Final = 0x01
BIND: Final = 0x02
UDP_ASSOCIATE: Final = 0x03

SUCCESS: Final = 0x00
GENERAL_FAILURE: Final = 0x01
CONNECTION_NOT_ALLOWED: Final = 0x02
NETWORK_UNREACHABLE: Final = 0x03
HOST_UNREACHABLE: Final = 0x04
CONNECTION_REFUSED: Final = 0x05
TTL_EXPIRED: Final = 0x06
COMMAND_NOT_SUPPORTED: Final = 0x07
ADDRESS_TYPE_NOT_SUPPORTED: Final = 0x08

ATYP_IPV4: Final = 0x01
ATYP_NAME: Final = 0x03
ATYP_IPV6: Final = 0x04

_ADDRESS_LENGTHS: Final = {ATYP_IPV4: 4, ATYP_IPV6: 16}

# --- errors -----------------------------------------------------------------------------------


@final
class SOCKS5ProtocolError(ProtocolViolation):
    """EPROTO: the peer broke the SOCKS5 protocol (bad version byte, reserved byte, malformed
    message, a method that was not offered, an unknown command or address type).

    The connection is of no further use (close it). A :class:`ProtocolViolation`, so also a
    ``trio.BrokenResourceError``.

    :attr:`reply` is the reply code a proxy should still send before closing (07 for an
    unknown command, 08 for an unknown address type), or ``None`` when no reply is due.
    """

    def __init__(self, message: str = "", *, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


# --- messages ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class Greeting:
    """Client -> proxy: the authentication methods the client offers."""

    methods: tuple[int, ...]


@final
@dataclass(frozen=True)
class MethodChoice:
    """Proxy -> client: the method chosen, or ``METHOD_NONE`` (0xFF)."""

    method: int


@final
@dataclass(frozen=True)
class AuthRequest:
    """Client -> proxy: RFC 1929 username and password (UTF-8, undecodable bytes escaped)."""

    username: str
    password: str


@final
@dataclass(frozen=True)
class AuthReply:
    """Proxy -> client: RFC 1929 status; 0 is success, anything else a refusal."""

    status: int


@final
@dataclass(frozen=True)
class Request:
    """Client -> proxy: a command (CONNECT, BIND, UDP_ASSOCIATE) for ``host:port``.

    ``host`` is an IPv4 or IPv6 address in text form or a domain name, per ``address_type``.
    """

    command: int
    host: str
    port: int
    address_type: int


@final
@dataclass(frozen=True)
class Reply:
    """Proxy -> client: the reply code and the address the proxy bound."""

    reply: int
    host: str
    port: int
    address_type: int


Message = Greeting | MethodChoice | AuthRequest | AuthReply | Request | Reply


# --- encoding ---------------------------------------------------------------------------------


def credential_bytes(value: object, name: str) -> bytes:
    """A username or password as the bytes RFC 1929 sends (UTF-8; at most 255), else EINVAL."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise InvalidArgumentType(f"{name} must be str or bytes, not {type(value).__name__}")
    if len(data) > 255:
        raise InvalidArgument(f"{name} is {len(data)} bytes; SOCKS5 allows at most 255")
    return data


def encode_address(host: object, port: object) -> bytes:
    """``ATYP ADDR PORT`` for ``host``: an IP literal goes as IPv4/IPv6, anything else as a
    domain name (1 to 255 bytes; non-ASCII names are IDNA-encoded). EINVAL when it cannot be."""
    port = check_int(port, "port", 0, 65535)
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        host = str(host)
    if isinstance(host, bytes | bytearray):
        host = bytes(host).decode("ascii", "surrogateescape")
    if not isinstance(host, str):
        raise InvalidArgumentType(f"host must be str, not {type(host).__name__}")
    tail = port.to_bytes(2, "big")
    for family, atyp in ((socket.AF_INET, ATYP_IPV4), (socket.AF_INET6, ATYP_IPV6)):
        try:
            return bytes([atyp]) + socket.inet_pton(family, host) + tail
        except (OSError, ValueError):  # ValueError: a NUL byte, refused below too
            continue
    try:
        name = host.encode("ascii") if host.isascii() else host.encode("idna")
    except UnicodeError:
        raise InvalidArgument(f"host {host!r} is neither an IP address nor a domain name") from None
    if not 1 <= len(name) <= 255 or b"\x00" in name:
        raise InvalidArgument(f"a domain name must be 1 to 255 bytes, not {len(name)}")
    return bytes([ATYP_NAME, len(name)]) + name + tail


def encode_reply(reply: int, host: object = "0.0.0.0", port: object = 0) -> bytes:
    """A whole reply message (``05 REP 00 ATYP ADDR PORT``); ``reply`` must be 0..8."""
    check_int(reply, "reply", SUCCESS, ADDRESS_TYPE_NOT_SUPPORTED)
    return bytes([VERSION, reply, 0]) + encode_address(host, port)


# --- parsing ----------------------------------------------------------------------------------
# Each parser looks at the unconsumed bytes, returns (message, length) once the message is
# whole, NEED_DATA before, and raises as soon as a byte already there is wrong.


def _version(data: bytes, expected: int, what: str) -> None:
    if data and data[0] != expected:
        raise SOCKS5ProtocolError(f"{what}: version byte {data[0]:#04x}, expected {expected:#04x}")


def _parse_greeting(data: bytes) -> tuple[Message, int] | NeedData:
    _version(data, VERSION, "greeting")
    if len(data) < 2:
        return NEED_DATA
    if data[1] == 0:
        raise SOCKS5ProtocolError("greeting offers no authentication method")
    end = 2 + data[1]
    if len(data) < end:
        return NEED_DATA
    return Greeting(tuple(data[2:end])), end


def _parse_method(data: bytes) -> tuple[Message, int] | NeedData:
    _version(data, VERSION, "method choice")
    return (MethodChoice(data[1]), 2) if len(data) >= 2 else NEED_DATA


def _parse_auth(data: bytes) -> tuple[Message, int] | NeedData:
    _version(data, AUTH_VERSION, "username/password request")
    if len(data) < 2:
        return NEED_DATA
    plen_at = 2 + data[1]
    if len(data) <= plen_at:
        return NEED_DATA
    end = plen_at + 1 + data[plen_at]
    if len(data) < end:
        return NEED_DATA
    username = data[2:plen_at].decode("utf-8", "surrogateescape")
    password = data[plen_at + 1 : end].decode("utf-8", "surrogateescape")
    return AuthRequest(username, password), end


def _parse_auth_reply(data: bytes) -> tuple[Message, int] | NeedData:
    _version(data, AUTH_VERSION, "username/password reply")
    return (AuthReply(data[1]), 2) if len(data) >= 2 else NEED_DATA


def _parse_address(
    data: bytes, what: str, unknown_type_reply: int | None
) -> tuple[str, int, int, int] | NeedData:
    """``05 X 00 ATYP ADDR PORT``'s address: (host, port, atyp, end) or NEED_DATA."""
    _version(data, VERSION, what)
    if len(data) >= 3 and data[2] != 0:
        raise SOCKS5ProtocolError(f"{what}: reserved byte is {data[2]:#04x}, not 0")
    if len(data) < 4:
        return NEED_DATA
    atyp = data[3]
    if atyp == ATYP_NAME:
        if len(data) < 5:
            return NEED_DATA
        if data[4] == 0:
            raise SOCKS5ProtocolError(f"{what}: empty domain name")
        start, end = 5, 5 + data[4]
    elif atyp in _ADDRESS_LENGTHS:
        start, end = 4, 4 + _ADDRESS_LENGTHS[atyp]
    else:
        raise SOCKS5ProtocolError(
            f"{what}: unknown address type {atyp:#04x}", reply=unknown_type_reply
        )
    if len(data) < end + 2:
        return NEED_DATA
    raw = data[start:end]
    if atyp == ATYP_NAME:
        try:
            host = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SOCKS5ProtocolError(f"{what}: domain name is not UTF-8") from None
        if "\x00" in host:
            raise SOCKS5ProtocolError(f"{what}: domain name holds a NUL byte")
    else:
        host = str(ipaddress.ip_address(raw))
    return host, int.from_bytes(data[end : end + 2], "big"), atyp, end + 2


def _parse_request(data: bytes) -> tuple[Message, int] | NeedData:
    address = _parse_address(data, "request", ADDRESS_TYPE_NOT_SUPPORTED)
    if address is NEED_DATA:
        return NEED_DATA
    host, port, atyp, end = address
    if not CONNECT <= data[1] <= UDP_ASSOCIATE:
        raise SOCKS5ProtocolError(
            f"request: unknown command {data[1]:#04x}", reply=COMMAND_NOT_SUPPORTED
        )
    return Request(data[1], host, port, atyp), end


def _parse_reply(data: bytes) -> tuple[Message, int] | NeedData:
    address = _parse_address(data, "reply", None)
    if address is NEED_DATA:
        return NEED_DATA
    host, port, atyp, end = address
    return Reply(data[1], host, port, atyp), end


# --- the conversation -------------------------------------------------------------------------


class Role(enum.Enum):
    """Which end of the conversation a :class:`SOCKS5Core` is."""

    CLIENT = "client"
    PROXY = "proxy"


class SOCKS5State(enum.Enum):
    """Whose message is next (see the module's table); ESTABLISHED and FAILED are final."""

    GREETING = "GREETING"  #: client's greeting
    METHOD = "METHOD"  #: proxy's method choice
    AUTH = "AUTH"  #: client's username/password
    AUTH_REPLY = "AUTH_REPLY"  #: proxy's auth status
    REQUEST = "REQUEST"  #: client's request
    REPLY = "REPLY"  #: proxy's reply
    ESTABLISHED = "ESTABLISHED"  #: the tunnel is up
    FAILED = "FAILED"  #: refused, or a protocol error


class SOCKS5Event(enum.Enum):
    """One message sent or received (or an error), moving :class:`SOCKS5State`."""

    GREETING = "GREETING"
    NO_AUTH = "NO_AUTH"
    USERPASS = "USERPASS"
    NO_METHOD = "NO_METHOD"
    AUTH = "AUTH"
    AUTH_OK = "AUTH_OK"
    AUTH_FAILED = "AUTH_FAILED"
    REQUEST = "REQUEST"
    BAD_REQUEST = "BAD_REQUEST"
    REPLY_OK = "REPLY_OK"
    REPLY_FAILED = "REPLY_FAILED"
    ERROR = "ERROR"


_S, _E = SOCKS5State, SOCKS5Event

#: ``(state, event) -> new state``, shared by both ends.
TRANSITIONS: Final[dict[tuple[SOCKS5State, SOCKS5Event], SOCKS5State]] = {
    (_S.GREETING, _E.GREETING): _S.METHOD,
    (_S.METHOD, _E.NO_AUTH): _S.REQUEST,
    (_S.METHOD, _E.USERPASS): _S.AUTH,
    (_S.METHOD, _E.NO_METHOD): _S.FAILED,
    (_S.AUTH, _E.AUTH): _S.AUTH_REPLY,
    (_S.AUTH_REPLY, _E.AUTH_OK): _S.REQUEST,
    (_S.AUTH_REPLY, _E.AUTH_FAILED): _S.FAILED,
    (_S.REQUEST, _E.REQUEST): _S.REPLY,
    (_S.REQUEST, _E.BAD_REQUEST): _S.REPLY,
    (_S.REPLY, _E.REPLY_OK): _S.ESTABLISHED,
    (_S.REPLY, _E.REPLY_FAILED): _S.FAILED,
    **{(state, _E.ERROR): _S.FAILED for state in _S if state not in (_S.ESTABLISHED, _S.FAILED)},
}

_METHOD_EVENTS: Final = {
    METHOD_NO_AUTH: _E.NO_AUTH,
    METHOD_USERPASS: _E.USERPASS,
    METHOD_NONE: _E.NO_METHOD,
}

# The state in which each role receives, and what it parses there.
_RECEIVES: Final = {
    Role.PROXY: {_S.GREETING: _parse_greeting, _S.AUTH: _parse_auth, _S.REQUEST: _parse_request},
    Role.CLIENT: {
        _S.METHOD: _parse_method,
        _S.AUTH_REPLY: _parse_auth_reply,
        _S.REPLY: _parse_reply,
    },
}


@final
class SOCKS5Core:
    """One end of a SOCKS5 handshake: ``send_*`` give wire bytes, ``feed`` / ``next_event``
    parse the peer's messages. Sending or expecting a message out of turn is EINVAL.

    ``start`` is ``GREETING`` (a whole handshake) or ``REQUEST`` (after authentication was
    done by another core, as libdill's separate proxy calls do).
    """

    __slots__ = ("_buffer", "_eof", "_error", "_machine", "_offered", "_role")

    def __init__(self, role: Role, start: SOCKS5State = SOCKS5State.GREETING) -> None:
        if not isinstance(role, Role):
            raise InvalidArgumentType(f"role must be a Role, not {type(role).__name__}")
        if start not in (SOCKS5State.GREETING, SOCKS5State.REQUEST):
            raise InvalidArgument(f"a core starts at GREETING or REQUEST, not {start!r}")
        self._role = role
        self._machine = StateMachine(TRANSITIONS, start)
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._offered: tuple[int, ...] = ()
        self._error: SOCKS5ProtocolError | ConnectionBroken | None = None

    def __repr__(self) -> str:
        return (
            f"<SOCKS5Core {self._role.value} state={self.state.name} pending={len(self._buffer)}>"
        )

    @property
    def role(self) -> Role:
        """``Role.CLIENT`` or ``Role.PROXY``."""
        return self._role

    @property
    def state(self) -> SOCKS5State:
        """The current :class:`SOCKS5State`."""
        return self._machine.state

    @property
    def trailing_data(self) -> bytes:
        """Bytes fed but not parsed: after the last message, the tunnel's first bytes."""
        return self._buffer.peek()

    # --- sending ------------------------------------------------------------------------------

    def _sending(self, role: Role, state: SOCKS5State, what: str) -> None:
        if self._role is not role or self._machine.state is not state:
            raise InvalidArgument(
                f"a {self._role.value} in state {self.state.name} cannot send {what}"
            )

    def send_greeting(self, methods: tuple[int, ...] | list[int]) -> bytes:
        """Client: offer ``methods`` (1 to 255 distinct method codes)."""
        self._sending(Role.CLIENT, SOCKS5State.GREETING, "a greeting")
        offered = tuple(methods)
        if not 1 <= len(offered) <= 255 or len(set(offered)) != len(offered):
            raise InvalidArgument("a greeting offers 1 to 255 distinct methods")
        if not all(type(m) is int and 0 <= m <= 0xFE for m in offered):
            raise InvalidArgument(f"method codes are ints 0..254, not {offered!r}")
        self._offered = offered
        self._machine.fire(_E.GREETING)
        return bytes([VERSION, len(offered), *offered])

    def send_method(self, method: int) -> bytes:
        """Proxy: choose one of the offered methods, or ``METHOD_NONE`` to refuse them all."""
        self._sending(Role.PROXY, SOCKS5State.METHOD, "a method choice")
        if method != METHOD_NONE and method not in self._offered:
            raise InvalidArgument(f"method {method} was not offered (offered {self._offered})")
        if method not in _METHOD_EVENTS:
            raise InvalidArgument(f"method {method} is not supported here")
        self._machine.fire(_METHOD_EVENTS[method])
        return bytes([VERSION, method])

    def send_auth(self, username: str | bytes, password: str | bytes) -> bytes:
        """Client: RFC 1929 username and password (each 0 to 255 bytes)."""
        self._sending(Role.CLIENT, SOCKS5State.AUTH, "a username/password")
        user = credential_bytes(username, "username")
        secret = credential_bytes(password, "password")
        self._machine.fire(_E.AUTH)
        return bytes([AUTH_VERSION, len(user)]) + user + bytes([len(secret)]) + secret

    def send_auth_status(self, ok: bool) -> bytes:
        """Proxy: accept (status 0) or refuse (0xFF) the username and password."""
        self._sending(Role.PROXY, SOCKS5State.AUTH_REPLY, "an auth status")
        self._machine.fire(_E.AUTH_OK if ok else _E.AUTH_FAILED)
        return bytes([AUTH_VERSION, 0x00 if ok else 0xFF])

    def send_request(self, command: int, host: object, port: object) -> bytes:
        """Client: ``command`` (CONNECT, BIND, UDP_ASSOCIATE) for ``host:port``."""
        self._sending(Role.CLIENT, SOCKS5State.REQUEST, "a request")
        check_int(command, "command", CONNECT, UDP_ASSOCIATE)
        wire = bytes([VERSION, command, 0]) + encode_address(host, port)
        self._machine.fire(_E.REQUEST)
        return wire

    def send_reply(self, reply: int, host: object = "0.0.0.0", port: object = 0) -> bytes:
        """Proxy: the reply code (0..8) and the bound address."""
        self._sending(Role.PROXY, SOCKS5State.REPLY, "a reply")
        wire = encode_reply(reply, host, port)
        self._machine.fire(_E.REPLY_OK if reply == SUCCESS else _E.REPLY_FAILED)
        return wire

    # --- receiving ----------------------------------------------------------------------------

    def feed(self, data: BytesLike) -> None:
        """Append bytes received from the peer. EINVAL after :meth:`feed_eof`."""
        check_bytes_like(data, "data")
        if self._eof:
            raise InvalidArgument("feed() after feed_eof()")
        self._buffer.append(data)

    def feed_eof(self) -> None:
        """The peer closed its side; calling it again changes nothing."""
        self._eof = True

    def next_event(self) -> Message | NeedData:
        """The peer's next message, or :data:`NEED_DATA`.

        Raises :class:`SOCKS5ProtocolError` for a malformed message (sticky, but for an unknown
        command or address type, after which the proxy may still send its reply) and
        :class:`ConnectionBroken` when the stream ended first (sticky).
        """
        if self._error is not None:
            raise type(self._error)(self._error.strerror or "")
        parse = _RECEIVES[self._role].get(self._machine.state)
        if parse is None:
            raise InvalidArgument(
                f"a {self._role.value} in state {self.state.name} expects no message"
            )
        try:
            result = parse(self._buffer.peek(_MAX_MESSAGE))
        except SOCKS5ProtocolError as exc:
            bad_request = exc.reply is not None and self._machine.state is SOCKS5State.REQUEST
            self._machine.fire(_E.BAD_REQUEST if bad_request else _E.ERROR)
            if not bad_request:
                self._error = exc
            raise
        if result is NEED_DATA:
            if self._eof:
                self._machine.fire(_E.ERROR)
                self._error = ConnectionBroken("the peer closed the stream in the SOCKS5 handshake")
                raise ConnectionBroken(self._error.strerror or "")
            return NEED_DATA
        message, length = result
        self._machine.fire(self._received(message))
        self._buffer.discard(length)
        return message

    def _received(self, message: Message) -> SOCKS5Event:
        if isinstance(message, Greeting):
            self._offered = message.methods
            return _E.GREETING
        if isinstance(message, MethodChoice):
            if message.method != METHOD_NONE and message.method not in self._offered:
                self._machine.fire(_E.ERROR)
                self._error = SOCKS5ProtocolError(
                    f"the proxy chose method {message.method:#04x}, which was not offered"
                )
                raise self._error
            return _METHOD_EVENTS[message.method]
        if isinstance(message, AuthRequest):
            return _E.AUTH
        if isinstance(message, AuthReply):
            return _E.AUTH_OK if message.status == 0 else _E.AUTH_FAILED
        if isinstance(message, Request):
            return _E.REQUEST
        return _E.REPLY_OK if message.reply == SUCCESS else _E.REPLY_FAILED


# The longest message: an auth request (1 + 1 + 255 + 1 + 255); a parser never needs more.
_MAX_MESSAGE: Final = 513
