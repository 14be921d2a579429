"""libdill's SOCKS5 calls on our streams, and the proxy that ``tlsattach socks5`` runs.

The first tests are libdill's own ``tests/socks5.c`` matrix (client by address, by IP string and
by name, proxy by address and by name, with and without username/password) over a socketpair;
then every errno, the pushback of early bytes, deadlines on the mock clock, and the proxy
connecting to real loopback targets, also behind TLS (TLS inside TLS).
"""

from __future__ import annotations

import errno
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing
from _socks5_helpers import run_both

import trio_tlsattach as ta
from trio_tlsattach._cores.socks5 import encode_reply
from trio_tlsattach._socks5 import credentials_checker

Pair = tuple[ta.SocketTransport, ta.SocketTransport]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """Two connected socket transports (client end, proxy end), closed at the end."""
    c, p = ta.socketpair()
    async with c, p:
        yield c, p


CREDENTIALS = pytest.mark.parametrize(
    ("user", "password"), [(None, None), ("user", "pass")], ids=["noauth", "userpass"]
)
# How libdill's test client names the target: by ipaddr, or by a string (an IP or a name).
HOW = {"ipv4": "127.0.0.1", "ipv6": "::1", "ipstring": "127.0.0.1", "name": "localhost"}


async def connect(
    s: ta.ByteStream, user: str | None, password: str | None, how: str
) -> ta.ByteStream:
    if how in ("ipv4", "ipv6"):
        return await ta.socks5_client_connect(s, user, password, (HOW[how], 5555), ta.after(5))
    return await ta.socks5_client_connectbyname(s, user, password, HOW[how], 5555, ta.after(5))


def auth_fn_for(user: str | None, password: str | None) -> Callable[[str, str], bool] | None:
    return None if user is None or password is None else credentials_checker(user, password)


# -- libdill's matrix ----------------------------------------------------------------------------


@CREDENTIALS
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("byname", [False, True], ids=["proxy_byaddr", "proxy_byname"])
async def test_libdill_matrix(
    how: str, byname: bool, user: str | None, password: str | None
) -> None:
    c, p = ta.socketpair()
    # recvcommand resolves a name, IPv4 first, as libdill does
    expected = "127.0.0.1" if how == "name" and not byname else HOW[how]

    async def proxy() -> None:
        assert await ta.socks5_proxy_auth(p, auth_fn_for(user, password), ta.after(1)) == user
        if byname:
            command, host, port = await ta.socks5_proxy_recvcommandbyname(p, ta.after(1))
        else:
            command, (host, port) = await ta.socks5_proxy_recvcommand(p, ta.after(1))
        assert (command, host, port) == (ta.SOCKS5_CONNECT, expected, 5555)
        await ta.socks5_proxy_sendreply(p, ta.SOCKS5_SUCCESS, ("0.0.0.0", 0), ta.after(1))
        assert await p.receive_some(5) == b"hello"  # impersonate the target
        await p.send_all(b"olleh")

    async with c, p, trio.open_nursery() as nursery:
        nursery.start_soon(proxy)
        s = await connect(c, user, password, how)
        assert s is c  # the same stream, now a tunnel
        await s.send_all(b"hello")
        assert await s.receive_some(5) == b"olleh"


# -- no byte lost --------------------------------------------------------------------------------


async def test_early_bytes_are_pushed_back_on_both_ends(pair: Pair) -> None:
    c, p = pair
    # The client pipelines its greeting, request and first tunnel bytes in one write (as an
    # optimistic client does); the proxy answers with its reply and data in one write.
    await c.send_all(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50GET /")
    assert await ta.socks5_proxy_auth(p, None) is None
    assert await ta.socks5_proxy_recvcommand(p) == (1, ("127.0.0.1", 80))
    assert await p.receive_some() == b"GET /"
    # (socks5_proxy_auth already answered 05 00 to the greeting.)
    await p.send_all(encode_reply(0) + b"HTTP/1.1 200")
    s = await ta.socks5_client_connect(c, None, None, ("127.0.0.1", 80))
    assert await s.receive_some() == b"HTTP/1.1 200"


async def test_immediate_deadline_succeeds_when_everything_is_already_there(pair: Pair) -> None:
    c, p = pair
    await p.send_all(b"\x05\x02\x01\x00" + encode_reply(0, "::1", 7))
    s = await ta.socks5_client_connectbyname(c, "u", "p", "example.org", 443, ta.IMMEDIATE)
    assert s is c
    wire = await p.receive_some()
    assert wire == b"\x05\x02\x00\x02\x01\x01u\x01p\x05\x01\x00\x03\x0bexample.org\x01\xbb"


async def test_trio_stream_is_wrapped_for_the_client_only() -> None:
    a, b = trio.testing.memory_stream_pair()
    peer = ta.StreamTransport(b)
    await peer.send_all(b"\x05\x00" + encode_reply(0))
    s = await ta.socks5_client_connect(a, None, None, ("10.0.0.1", 1), ta.after(1))
    assert isinstance(s, ta.StreamTransport)
    with pytest.raises(ta.InvalidArgument, match="wrap_stream"):
        await ta.socks5_proxy_auth(a, None)
    await s.aclose()
    await peer.aclose()


async def test_a_wrapped_trio_stream_is_closed_when_the_handshake_fails() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"\x05\xff")
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        with pytest.raises(ta.SOCKS5AuthFailed):
            await ta.socks5_client_connect(stream, None, None, ("127.0.0.1", 1), ta.after(1))
        assert b.recv(10) == b"\x05\x01\x00"
        assert b.recv(10) == b""  # the wrapper that took the socket over closed it


# -- errnos --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_creds", "proxy_auth"),
    [
        (("user", "wrong"), ("user", "pass")),
        ((None, None), ("user", "pass")),
        (("u", None), ("u", "p")),
    ],
    ids=["wrong-password", "no-credentials", "half-credentials"],
)
async def test_refused_authentication_is_eacces_on_both_ends(
    client_creds: tuple[str | None, str | None], proxy_auth: tuple[str, str]
) -> None:
    c, p = ta.socketpair()
    async with c, p:
        errors = await run_both(
            lambda: ta.socks5_client_connect(c, *client_creds, ("127.0.0.1", 1), ta.after(1)),
            lambda: ta.socks5_proxy_auth(p, credentials_checker(*proxy_auth), ta.after(1)),
        )
    for exc in errors:
        assert isinstance(exc, ta.SOCKS5AuthFailed)
        assert isinstance(exc, PermissionError)
        assert exc.errno == errno.EACCES


async def test_proxy_without_auth_refuses_a_client_that_only_offers_passwords(pair: Pair) -> None:
    c, p = pair
    await c.send_all(b"\x05\x01\x02")
    with pytest.raises(ta.SOCKS5AuthFailed, match="not 0"):
        await ta.socks5_proxy_auth(p, None)
    assert await c.receive_some() == b"\x05\xff"


async def test_client_with_credentials_accepts_a_proxy_without_auth_and_async_auth_fn() -> None:
    c, p = ta.socketpair()
    seen: list[tuple[str, str]] = []

    async def check(user: str, password: str) -> bool:
        await trio.lowlevel.checkpoint()
        seen.append((user, password))
        return True

    async def proxy() -> None:
        assert await ta.socks5_proxy_auth(p, None, ta.after(1)) is None
        assert await ta.socks5_proxy_recvcommandbyname(p, ta.after(1)) == (1, "::1", 9)
        await ta.socks5_proxy_sendreply(p, ta.SOCKS5_SUCCESS, ("::", 0), ta.after(1))

    async with c, p:
        errors = await run_both(
            lambda: ta.socks5_client_connectbyname(c, "u", "p", "::1", 9, ta.after(1)), proxy
        )
        assert errors == (None, None)
    c, p = ta.socketpair()
    async with c, p:
        await c.send_all(b"\x05\x01\x02\x01\x02\xc3\xa9\x00")
        assert await ta.socks5_proxy_auth(p, check) == "é"
        assert seen == [("é", "")]
        assert await c.receive_some() == b"\x05\x02\x01\x00"


REPLY_ERRNOS = {
    ta.SOCKS5_GENERAL_FAILURE: errno.EIO,
    ta.SOCKS5_CONNECTION_NOT_ALLOWED: errno.EACCES,
    ta.SOCKS5_NETWORK_UNREACHABLE: errno.ENETUNREACH,
    ta.SOCKS5_HOST_UNREACHABLE: errno.EHOSTUNREACH,
    ta.SOCKS5_CONNECTION_REFUSED: errno.ECONNREFUSED,
    ta.SOCKS5_TTL_EXPIRED: errno.ETIMEDOUT,
    ta.SOCKS5_COMMAND_NOT_SUPPORTED: errno.ENOTSUP,
    ta.SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED: errno.EAFNOSUPPORT,
}


@pytest.mark.parametrize(
    ("answer", "code", "match"),
    [
        *(
            (b"\x05\x00" + encode_reply(r), code, "proxy replied")
            for r, code in REPLY_ERRNOS.items()
        ),
        (b"\x04\x00", errno.EPROTO, "version byte 0x04"),
        (b"\x05\x02", errno.EPROTO, "not offered"),
        (b"\x05\x00\x04", errno.EPROTO, "version byte 0x04"),
        (b"\x05\x00\x05\x09\x00\x01" + bytes(6), errno.EPROTO, "unknown code 0x09"),
        (b"\x05\x00\x05\x00\x01", errno.EPROTO, "reserved byte"),
    ],
)
async def test_refused_or_malformed_answer_has_libdills_errno(
    answer: bytes, code: int, match: str, pair: Pair
) -> None:
    c, p = pair
    await p.send_all(answer)
    with pytest.raises(ta.StackError, match=match) as info:
        await ta.socks5_client_connect(c, None, None, ("127.0.0.1", 1), ta.after(1))
    assert info.value.errno == code
    if isinstance(info.value, ta.SOCKS5ReplyError):
        assert REPLY_ERRNOS[info.value.reply] == code
    else:
        assert isinstance(info.value, ta.SOCKS5ProtocolError)
        assert code == errno.EPROTO


@pytest.mark.parametrize(
    ("request_", "reply", "match"),
    [
        (b"\x05\x04\x00\x01\x7f\x00\x00\x01\x00\x50", ta.SOCKS5_COMMAND_NOT_SUPPORTED, "command"),
        (b"\x05\x01\x00\x07", ta.SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED, "address type"),
        (b"\x04\x01\x00\x01", None, "version byte 0x04"),
    ],
)
async def test_bad_request_is_eproto_with_the_reply_to_send(
    request_: bytes, reply: int | None, match: str, pair: Pair
) -> None:
    c, p = pair
    await c.send_all(request_)
    with pytest.raises(ta.SOCKS5ProtocolError, match=match) as info:
        await ta.socks5_proxy_recvcommandbyname(p, ta.after(1))
    assert info.value.errno == errno.EPROTO
    assert info.value.reply == reply


async def test_bad_greeting_version_is_eproto_and_eof_is_econnreset() -> None:
    c, p = ta.socketpair()
    async with c, p:
        await c.send_all(b"\x04\x01\x00")
        with pytest.raises(ta.SOCKS5ProtocolError, match="version byte 0x04"):
            await ta.socks5_proxy_auth(p, None, ta.after(1))
    c, p = ta.socketpair()
    async with c, p:
        await c.send_all(b"\x05\x02\x00")
        await c.send_eof()
        with pytest.raises(ta.ConnectionBroken) as info:
            await ta.socks5_proxy_auth(p, None, ta.after(1))
        assert info.value.errno == errno.ECONNRESET
        assert await p.receive_some() == b"\x05\x02\x00"  # what came was pushed back, and EOF


@pytest.mark.parametrize(
    "call",
    [
        lambda s: ta.socks5_client_connect(s, "u" * 256, "p", ("127.0.0.1", 1)),
        lambda s: ta.socks5_client_connect(s, "u", b"p" * 256, ("127.0.0.1", 1)),
        lambda s: ta.socks5_client_connect(s, None, None, ("localhost", 1)),
        lambda s: ta.socks5_client_connect(s, None, None, ("127.0.0.1", 65536)),
        lambda s: ta.socks5_client_connect(s, None, None, "127.0.0.1:1"),  # type: ignore[arg-type]
        lambda s: ta.socks5_client_connect(s, 5, None, ("127.0.0.1", 1)),  # type: ignore[arg-type]
        lambda s: ta.socks5_client_connectbyname(s, None, None, "h", 0),
        lambda s: ta.socks5_client_connectbyname(s, None, None, "h", 65536),
        lambda s: ta.socks5_client_connectbyname(s, None, None, "h", True),
        lambda s: ta.socks5_client_connectbyname(s, None, None, "", 1),
        lambda s: ta.socks5_client_connectbyname(s, None, None, "h" * 256, 1),
        lambda s: ta.socks5_client_connectbyname(s, None, None, "h", 1, -5),
        lambda s: ta.socks5_proxy_sendreply(s, 9),
        lambda s: ta.socks5_proxy_sendreply(s, 0, ("h" * 256, 1)),
        lambda s: ta.socks5_proxy_auth(s, "not callable"),  # type: ignore[arg-type]
    ],
)
async def test_bad_arguments_are_einval_before_any_io(
    call: Callable[[ta.ByteStream], Awaitable[object]], pair: Pair
) -> None:
    c, p = pair
    with pytest.raises(ta.InvalidArgument) as info:
        await call(c)
    assert info.value.errno == errno.EINVAL
    await c.send_eof()
    assert await p.receive_some() == b""  # nothing was sent


async def test_wrong_handles() -> None:
    c, p = ta.socketpair()
    framed = await ta.prefix_attach(c, 2)
    with pytest.raises(ta.ProtocolMismatch):
        await ta.socks5_client_connect(framed, None, None, ("127.0.0.1", 1))
    with pytest.raises(ta.BadHandle):  # owned by the framing layer
        await ta.socks5_proxy_auth(c, None)
    await framed.aclose()
    await p.aclose()
    with pytest.raises(ta.BadHandle):
        await ta.socks5_proxy_sendreply(p, 0)


# -- deadlines (mock clock) ----------------------------------------------------------------------


async def test_deadline_on_a_silent_proxy(
    autojump_clock: trio.testing.MockClock, pair: Pair
) -> None:
    c, p = pair
    start = trio.current_time()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await ta.socks5_client_connectbyname(c, None, None, "h", 1, ta.after(7))
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - start == pytest.approx(7)
    assert await p.receive_some() == b"\x05\x01\x00"


async def test_one_deadline_covers_a_dribbling_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c, p = ta.socketpair()

    async def dribble() -> None:
        for byte in b"\x05\x01\x00\x05\x01\x00\x01":
            await c.send_all(bytes([byte]))
            await trio.sleep(1)

    async with c, p, trio.open_nursery() as nursery:
        nursery.start_soon(dribble)
        deadline = ta.after(5.5)
        await ta.socks5_proxy_auth(p, None, deadline)  # 3 bytes, 2 s
        with pytest.raises(ta.DeadlineExceeded):
            await ta.socks5_proxy_recvcommand(p, deadline)
        assert trio.current_time() == pytest.approx(deadline)
        assert await p.receive_some() == b"\x05\x01\x00"  # the partial request, not lost


def test_error_classes() -> None:
    refused = ta.SOCKS5ReplyError(ta.SOCKS5_CONNECTION_REFUSED)
    assert isinstance(refused, ta.StackError)
    assert refused.errno == errno.ECONNREFUSED
    assert refused.reply == ta.SOCKS5_CONNECTION_REFUSED
    assert "connection refused" in str(refused)
    again = pickle.loads(pickle.dumps(refused))
    assert (again.errno, again.reply, str(again)) == (refused.errno, 5, str(refused))
    denied = pickle.loads(pickle.dumps(ta.SOCKS5AuthFailed("no")))
    assert isinstance(denied, PermissionError)
    assert denied.errno == errno.EACCES
    assert ta.SOCKS5ResolveError().errno == errno.EADDRNOTAVAIL
