"""libdill's SOCKS5 API on Trio byte streams: a client that connects through a proxy, and the
three calls a proxy is made of.

Theory of operation
-------------------
SOCKS5 is not a layer: it is a handshake at the start of a byte stream, after which the same
stream carries the tunnelled bytes. So, as in libdill, these are functions on a stream ``s``
rather than an attach/detach pair::

    s = await open_tcp("127.0.0.1", 1080)
    s = await socks5_client_connectbyname(s, "user", "secret", "example.org", 443, after(10))
    tls = await tls_attach_client(s, ...)          # TLS to the target, through the proxy

and on the proxy side::

    user = await socks5_proxy_auth(s, check_password, deadline)    # or None: no auth
    command, (host, port) = await socks5_proxy_recvcommand(s, deadline)
    ...connect...
    await socks5_proxy_sendreply(s, SOCKS5_SUCCESS, bound_address, deadline)

Each call walks its part of the conversation with a :class:`~._cores.socks5.SOCKS5Core` (the
sans-IO state machine that encodes, parses and validates every message). It reads the stream
in chunks and, when it returns or fails, *pushes back* with ``s.unread()`` whatever it read past
its last message: a client that sends its first request bytes right behind the SOCKS5 request
(curl does) or a proxy that answers fast loses nothing. The stream returned is ``s`` itself
(a ``trio`` stream is first wrapped by :func:`wrap_stream`, as layers do).

Where libdill has out-parameters these return values: ``socks5_proxy_auth`` returns the
username (``None`` without authentication), ``socks5_proxy_recvcommand`` returns
``(command, (ip, port))`` with a domain name already resolved, ``socks5_proxy_recvcommandbyname``
returns ``(command, host, port)``.

Deadlines are absolute, as everywhere here (:func:`check_deadline`): one deadline covers the
whole call, however many messages it exchanges. Errors carry libdill's errnos: EINVAL for a bad
argument (a username over 255 bytes, a port out of range), EPROTO for anything malformed
(:class:`SOCKS5ProtocolError`; a bad version byte, a method that was not offered), EACCES for a
refused authentication on both ends (:class:`SOCKS5AuthFailed`), the reply code's errno when the
proxy refuses a request (:class:`SOCKS5ReplyError`), EADDRNOTAVAIL for a name that does not
resolve (:class:`SOCKS5ResolveError`), ECONNRESET when the peer closes mid-handshake, and
ETIMEDOUT when the deadline passes. On failure the stream is left open for the caller to close
(libdill's calls do not close ``s`` either).
"""

from __future__ import annotations

import errno
import hmac
import inspect
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar, final

import trio

from ._base import ByteStream, Handle, Kind, close_shielded
from ._cores import NEED_DATA
from ._cores._common import check_int
from ._cores.socks5 import (
    ADDRESS_TYPE_NOT_SUPPORTED,
    BIND,
    COMMAND_NOT_SUPPORTED,
    CONNECT,
    CONNECTION_NOT_ALLOWED,
    CONNECTION_REFUSED,
    GENERAL_FAILURE,
    HOST_UNREACHABLE,
    METHOD_NO_AUTH,
    METHOD_NONE,
    METHOD_USERPASS,
    NETWORK_UNREACHABLE,
    SUCCESS,
    TTL_EXPIRED,
    UDP_ASSOCIATE,
    AuthReply,
    AuthRequest,
    Greeting,
    MethodChoice,
    Reply,
    Request,
    Role,
    SOCKS5Core,
    SOCKS5ProtocolError,
    SOCKS5State,
    credential_bytes,
    encode_address,
    encode_reply,
)
from ._deadline import FOREVER, check_deadline, waiting
from ._errors import InvalidArgument, InvalidArgumentType, ProtocolMismatch, StackError
from ._transports import wrap_stream

__all__ = [
    "SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED",
    "SOCKS5_BIND",
    "SOCKS5_COMMAND_NOT_SUPPORTED",
    "SOCKS5_CONNECT",
    "SOCKS5_CONNECTION_NOT_ALLOWED",
    "SOCKS5_CONNECTION_REFUSED",
    "SOCKS5_GENERAL_FAILURE",
    "SOCKS5_HOST_UNREACHABLE",
    "SOCKS5_NETWORK_UNREACHABLE",
    "SOCKS5_SUCCESS",
    "SOCKS5_TTL_EXPIRED",
    "SOCKS5_UDP_ASSOCIATE",
    "AuthFunction",
    "SOCKS5AuthFailed",
    "SOCKS5ProtocolError",
    "SOCKS5ReplyError",
    "SOCKS5ResolveError",
    "credentials_checker",
    "socks5_client_connect",
    "socks5_client_connectbyname",
    "socks5_proxy_auth",
    "socks5_proxy_recvcommand",
    "socks5_proxy_recvcommandbyname",
    "socks5_proxy_sendreply",
]

# libdill's names for the commands and reply codes.
SOCKS5_CONNECT: Final = CONNECT
SOCKS5_BIND: Final = BIND
SOCKS5_UDP_ASSOCIATE: Final = UDP_ASSOCIATE
SOCKS5_SUCCESS: Final = SUCCESS
SOCKS5_GENERAL_FAILURE: Final = GENERAL_FAILURE
SOCKS5_CONNECTION_NOT_ALLOWED: Final = CONNECTION_NOT_ALLOWED
SOCKS5_NETWORK_UNREACHABLE: Final = NETWORK_UNREACHABLE
SOCKS5_HOST_UNREACHABLE: Final = HOST_UNREACHABLE
SOCKS5_CONNECTION_REFUSED: Final = CONNECTION_REFUSED
SOCKS5_TTL_EXPIRED: Final = TTL_EXPIRED
SOCKS5_COMMAND_NOT_SUPPORTED: Final = COMMAND_NOT_SUPPORTED
SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED: Final = ADDRESS_TYPE_NOT_SUPPORTED

AuthFunction: TypeAlias = Callable[[str, str], bool | Awaitable[bool]]
"""``auth_fn(username, password)``: true to let the client in; may be a coroutine function."""

Address: TypeAlias = tuple[Any, ...]
"""``(ip, port)`` (a socket address; extra IPv6 fields are ignored)."""

M = TypeVar("M")

# A handshake message is at most 513 bytes; one read usually holds the whole message.
_CHUNK: Final = 1024


# Each reply code's text, and the errno libdill's client gives for it (socks5.c,
# s5_handle_connection_response).
_REPLIES: Final = {
    SUCCESS: ("succeeded", 0),
    GENERAL_FAILURE: ("general SOCKS server failure", errno.EIO),
    CONNECTION_NOT_ALLOWED: ("connection not allowed by ruleset", errno.EACCES),
    NETWORK_UNREACHABLE: ("network unreachable", errno.ENETUNREACH),
    HOST_UNREACHABLE: ("host unreachable", errno.EHOSTUNREACH),
    CONNECTION_REFUSED: ("connection refused", errno.ECONNREFUSED),
    TTL_EXPIRED: ("TTL expired", errno.ETIMEDOUT),
    COMMAND_NOT_SUPPORTED: ("command not supported", errno.EOPNOTSUPP),
    ADDRESS_TYPE_NOT_SUPPORTED: ("address type not supported", errno.EAFNOSUPPORT),
}


# --- errors ---------------------------------------------------------------------------------------


@final
class SOCKS5AuthFailed(StackError, PermissionError):
    """EACCES: authentication was refused (no acceptable method, or a wrong username or
    password), libdill's errno for both. The proxy has already told the client."""

    default_errno = errno.EACCES


@final
class SOCKS5ResolveError(StackError):
    """EADDRNOTAVAIL: the domain name in a request resolved to no address (libdill's errno)."""

    default_errno = errno.EADDRNOTAVAIL


@final
class SOCKS5ReplyError(StackError):
    """The proxy answered the request with a failure code, kept in :attr:`reply`.

    ``errno`` is libdill's for that code: EIO (general failure), EACCES (not allowed),
    ENETUNREACH, EHOSTUNREACH, ECONNREFUSED, ETIMEDOUT (TTL expired), EOPNOTSUPP (command not
    supported; the same value as ENOTSUP on Linux), EAFNOSUPPORT (address type not supported).
    """

    def __init__(self, reply: int) -> None:
        # OSError's own constructor: the errno depends on the code, not on the class.
        text, code = _REPLIES[reply]
        OSError.__init__(self, code, f"SOCKS5 proxy replied {text}")
        self.reply = reply

    def __reduce__(self) -> tuple[type[StackError], tuple[int], dict[str, object]]:  # type: ignore[override]
        return (type(self), (self.reply,), dict(self.__dict__))


# --- the driver: one core, one stream -----------------------------------------------------------


def _stream(s: Any, *, wrap: bool) -> ByteStream:
    """``s`` as one of our byte streams; EPROTO for a message stream.

    The client calls return the stream, so they may wrap a Trio stream (``wrap``); the proxy
    calls return nothing, and wrapping there would hand the socket to an object the caller
    never sees.
    """
    if not wrap and not isinstance(s, Handle):
        raise InvalidArgumentType(
            f"expected one of our streams, not {type(s).__name__}: wrap it with wrap_stream()"
        )
    handle = wrap_stream(s)
    handle._check()
    if handle.kind is not Kind.BYTES or not isinstance(handle, ByteStream):
        raise ProtocolMismatch(f"SOCKS5 runs on a byte stream; {handle.label()} carries messages")
    return handle


@final
class _Conversation:
    """A core bound to a stream for one call (``async with``).

    Leaving it pushes back whatever was read past the last message, whatever happened. A Trio
    stream that the client calls wrapped is closed on failure: the caller's object no longer
    holds its socket, and the wrapper is never handed out.
    """

    __slots__ = ("core", "deadline", "stream", "wrapped")

    def __init__(self, s: Any, role: Role, deadline: float, start: SOCKS5State) -> None:
        self.deadline = check_deadline(deadline)
        self.stream = _stream(s, wrap=role is Role.CLIENT)
        self.wrapped = self.stream is not s
        self.core = SOCKS5Core(role, start)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data, self.deadline)

    async def receive(self, expected: type[M]) -> M:
        """Read until the core has the peer's next message (of type ``expected``)."""
        while (message := self.core.next_event()) is NEED_DATA:
            data = await self.stream.receive_some(_CHUNK, self.deadline)
            if data:
                self.core.feed(data)
            else:
                self.core.feed_eof()
        assert isinstance(message, expected), message  # the core's state decides what comes
        return message

    async def __aenter__(self) -> _Conversation:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if data := self.core.trailing_data:
            self.stream.unread(data)
        if exc_type is not None and self.wrapped:
            await close_shielded(self.stream)


# --- client -------------------------------------------------------------------------------------


def _credential(value: object, name: str) -> bytes | None:
    return None if value is None else credential_bytes(value, name)


async def _client(
    s: Any, username: object, password: object, host: object, port: object, deadline: float
) -> ByteStream:
    user, secret = _credential(username, "username"), _credential(password, "password")
    encode_address(host, port)  # EINVAL for a bad host or port before anything is sent
    async with _Conversation(s, Role.CLIENT, deadline, SOCKS5State.GREETING) as talk:
        core = talk.core
        # As libdill: offer username/password only when both are given.
        both = user is not None and secret is not None
        await talk.send(
            core.send_greeting((METHOD_NO_AUTH, METHOD_USERPASS) if both else (METHOD_NO_AUTH,))
        )
        choice = await talk.receive(MethodChoice)
        if choice.method == METHOD_NONE:
            raise SOCKS5AuthFailed("the proxy accepts none of the offered methods")
        if choice.method == METHOD_USERPASS:
            # The core refuses a method that was not offered, so both are set here.
            assert user is not None
            assert secret is not None
            await talk.send(core.send_auth(user, secret))
            if (await talk.receive(AuthReply)).status != 0:
                raise SOCKS5AuthFailed("the proxy refused the username or password")
        await talk.send(core.send_request(CONNECT, host, port))
        reply = await talk.receive(Reply)
        if reply.reply > ADDRESS_TYPE_NOT_SUPPORTED:  # libdill: an unknown code is EPROTO
            raise SOCKS5ProtocolError(f"the proxy replied with unknown code {reply.reply:#04x}")
        if reply.reply != SUCCESS:
            raise SOCKS5ReplyError(reply.reply)
        return talk.stream


def _ip_literal(host: object) -> str:
    """``host`` as IP text; EINVAL when it is not an IP address (libdill takes an ipaddr)."""
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(host)
    if isinstance(host, str):
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            return host
    raise InvalidArgument(f"addr must be an (IP address, port) pair, not host {host!r}")


async def socks5_client_connect(
    s: Any,
    username: str | bytes | None,
    password: str | bytes | None,
    addr: Address,
    deadline: float = FOREVER,
) -> ByteStream:
    """Ask the SOCKS5 proxy at the other end of ``s`` to connect to ``addr`` (an
    ``(ip, port)`` pair); returns ``s``, now a tunnel to ``addr``.

    With both ``username`` and ``password`` (at most 255 bytes each) the client also offers
    RFC 1929 authentication; with either ``None`` it offers none. Raises
    :class:`SOCKS5AuthFailed` (EACCES), :class:`SOCKS5ReplyError` (the proxy's refusal),
    :class:`SOCKS5ProtocolError` (EPROTO), :class:`InvalidArgument` (EINVAL, before any I/O),
    :class:`DeadlineExceeded` (ETIMEDOUT). ``s`` stays open on failure: close it. A Trio
    stream (``trio.SocketStream``...) is wrapped by :func:`wrap_stream`, which takes it over:
    use the stream returned; on failure the wrapper is closed here.
    """
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise InvalidArgumentType(f"addr must be an (ip, port) tuple, not {addr!r}")
    return await _client(s, username, password, _ip_literal(addr[0]), addr[1], deadline)


async def socks5_client_connectbyname(
    s: Any,
    username: str | bytes | None,
    password: str | bytes | None,
    hostname: str,
    port: int,
    deadline: float = FOREVER,
) -> ByteStream:
    """As :func:`socks5_client_connect`, to ``hostname:port``; the proxy resolves the name (an
    IP literal is sent as an address, as libdill does). ``port`` is 1..65535; a name is 1 to
    255 bytes."""
    check_int(port, "port", 1, 65535)  # the core's encoding takes 0 too (a reply's "any")
    if not isinstance(hostname, str) or not hostname:
        raise InvalidArgument(f"hostname must be a non-empty str, not {hostname!r}")
    return await _client(s, username, password, hostname, port, deadline)


# --- proxy --------------------------------------------------------------------------------------


def credentials_checker(username: str, password: str) -> Callable[[str, str], bool]:
    """An ``auth_fn`` accepting exactly this username and password (compared in constant time)."""
    expected = (
        username.encode("utf-8", "surrogateescape"),
        password.encode("utf-8", "surrogateescape"),
    )

    def check(user: str, secret: str) -> bool:
        user_ok = hmac.compare_digest(user.encode("utf-8", "surrogateescape"), expected[0])
        secret_ok = hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), expected[1])
        return user_ok and secret_ok

    return check


async def socks5_proxy_auth(
    s: Any, auth_fn: AuthFunction | None, deadline: float = FOREVER
) -> str | None:
    """Proxy side: read the client's greeting and authenticate it, as libdill does.

    Without ``auth_fn`` the client must offer "no authentication"; with one it must offer
    username/password, and ``auth_fn(username, password)`` (plain or async) decides. Returns
    the username, or ``None`` when no authentication took place. A refusal is told to the client
    (``05 FF`` or ``01 FF``) and raised as :class:`SOCKS5AuthFailed` (EACCES).
    """
    if auth_fn is not None and not callable(auth_fn):
        raise InvalidArgumentType(f"auth_fn must be callable or None, not {type(auth_fn).__name__}")
    async with _Conversation(s, Role.PROXY, deadline, SOCKS5State.GREETING) as talk:
        core = talk.core
        greeting = await talk.receive(Greeting)
        wanted = METHOD_NO_AUTH if auth_fn is None else METHOD_USERPASS
        if wanted not in greeting.methods:
            await talk.send(core.send_method(METHOD_NONE))
            raise SOCKS5AuthFailed(
                f"the client offers methods {list(greeting.methods)}, not {wanted} as required"
            )
        await talk.send(core.send_method(wanted))
        if auth_fn is None:
            return None
        request = await talk.receive(AuthRequest)
        verdict = auth_fn(request.username, request.password)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        await talk.send(core.send_auth_status(bool(verdict)))
        if not verdict:
            raise SOCKS5AuthFailed(f"wrong username or password for {request.username!r}")
        return request.username


async def socks5_proxy_recvcommandbyname(s: Any, deadline: float = FOREVER) -> tuple[int, str, int]:
    """Proxy side: read the client's request; returns ``(command, host, port)`` with ``host`` as
    sent (IPv4 or IPv6 text, or a domain name, unresolved).

    An unknown command or address type is :class:`SOCKS5ProtocolError` (EPROTO) whose
    ``reply`` (COMMAND_NOT_SUPPORTED or ADDRESS_TYPE_NOT_SUPPORTED) you may still send.
    """
    async with _Conversation(s, Role.PROXY, deadline, SOCKS5State.REQUEST) as talk:
        request = await talk.receive(Request)
        return request.command, request.host, request.port


async def socks5_proxy_recvcommand(
    s: Any, deadline: float = FOREVER
) -> tuple[int, tuple[str, int]]:
    """As :func:`socks5_proxy_recvcommandbyname`, with a domain name resolved (IPv4 preferred,
    as libdill does): returns ``(command, (ip, port))``. A name that resolves to nothing is
    :class:`SOCKS5ResolveError` (EADDRNOTAVAIL)."""
    checked = check_deadline(deadline)
    command, host, port = await socks5_proxy_recvcommandbyname(s, checked)
    try:
        _ip_literal(host)
    except InvalidArgument:
        host = await _resolve(host, port, checked)
    return command, (host, port)


async def _resolve(name: str, port: int, deadline: float) -> str:
    try:
        with waiting(deadline, f"resolve {name}"):
            infos = await trio.socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror, or a resolver failure
        raise SOCKS5ResolveError(f"cannot resolve {name!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise SOCKS5ResolveError(f"{name!r} has no address")
    return str(infos[0][4][0])


async def socks5_proxy_sendreply(
    s: Any, reply: int, addr: Address | None = None, deadline: float = FOREVER
) -> None:
    """Proxy side: answer the request with ``reply`` (``SOCKS5_SUCCESS`` ... 8) and the
    address the proxy bound for it (``None``: ``0.0.0.0:0``). EINVAL for a code out of range."""
    host, port = ("0.0.0.0", 0) if addr is None else (addr[0], addr[1])
    checked = check_deadline(deadline)
    wire = encode_reply(reply, host, port)  # EINVAL before any I/O
    await _stream(s, wrap=False).send_all(wire, checked)
