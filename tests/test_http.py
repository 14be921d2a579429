"""The HTTP layer: check_layer, the head exchange both ways, detach with the body, bad input."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing
import trustme
from _tls_helpers import receive_exactly

import trio_tlsattach as ta
from trio_tlsattach import after
from trio_tlsattach._cores.http import HeaderTooLarge, HTTPProtocolError, PeerDone
from trio_tlsattach._http import HTTPLayer, HTTPStream
from trio_tlsattach.testing import (
    TRANSPORT_PAIRS,
    attach_both,
    check_layer,
    tcp_pair,
    tls_pair,
)


async def _exchange_heads(client: HTTPStream, server: HTTPStream) -> None:
    """A request one way, a response the other: both ends are then in their bodies."""
    await client.send_request("POST", "/upload")
    await client.send_field("Host", "example.org")
    await client.done()
    assert await server.receive_request() == ("POST", "/upload")
    assert await server.receive_fields() == [("Host", "example.org")]
    await server.send_status(200, "OK")
    await server.done()
    assert await client.receive_status() == (200, "OK")
    with pytest.raises(PeerDone):
        await client.receive_field()


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(transport: str) -> None:
    async def attach_pair(a: object, b: object) -> tuple[HTTPStream, HTTPStream]:
        layer = HTTPLayer()
        client, server = await attach_both(a, b, layer.attach, layer.attach)
        await _exchange_heads(client, server)
        return client, server

    await check_layer(attach_pair, transport_pair=transport)


async def test_libdill_client_and_server() -> None:
    """libdill's man page example, both ends, with its names."""
    a, b = ta.socketpair()
    client, server = await ta.http_attach(a), await ta.http_attach(b)
    await ta.http_sendrequest(client, "GET", "/", after(5))
    await ta.http_sendfield(client, "Host", "www.example.org", after(5))
    await ta.http_done(client, after(5))
    assert await ta.http_recvrequest(server, after(5)) == ("GET", "/")
    fields = []
    while True:
        try:
            fields.append(await ta.http_recvfield(server, after(5)))
        except ta.PeerDone as exc:
            code = exc.errno
            break
    assert code == errno.EPIPE
    assert fields == [("Host", "www.example.org")]
    await ta.http_sendstatus(server, 200, "OK")
    await ta.http_done(server)
    assert await ta.http_recvstatus(client) == (200, "OK")
    with pytest.raises(ta.PeerDone):
        await ta.http_recvfield(client)
    assert await ta.http_detach(client) is a
    assert await ta.http_detach(server) is b
    for call in (ta.http_done(a), ta.http_detach(a), ta.http_recvfield(a)):  # type: ignore[arg-type]
        with pytest.raises(ta.NotSupported):
            await call
    await a.aclose()
    await b.aclose()


async def test_what_goes_on_the_wire() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(a)
    await http.send_request("PUT", "/r")
    await http.send_field("Content-Length", " 4 ")
    await http.done()
    await http.send_all(b"data")
    await http.send_eof()
    assert await receive_until_eof(b) == b"PUT /r HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata"
    await http.aclose()
    await b.aclose()


async def receive_until_eof(stream: ta.ByteStream) -> bytes:
    got = b""
    while chunk := await stream.receive_some(deadline=after(5)):
        got += chunk
    return got


HEAD = b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"


@pytest.mark.parametrize("read_first", [False, True])
async def test_detach_hands_back_the_body(read_first: bool) -> None:
    """The head and the body in one write: the body's bytes are not lost in the layer."""
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    await a.send_all(HEAD + b"hello world" + b"NEXT")
    if read_first:
        assert await http.receive_request() == ("POST", "/form")
        assert await http.receive_field() == ("Host", "h")
    else:  # detach reads the head itself, and leaves the fields on .head
        pass
    raw = await http.detach(after(5))
    assert raw is b
    assert http.head is not None
    assert http.head.fields == (("Host", "h"), ("Content-Length", "11"))
    assert await raw.receive_some(100) == b"hello worldNEXT"
    assert http.status == "detached"
    await a.aclose()
    await b.aclose()


async def test_body_read_on_the_layer_then_detach() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    await a.send_all(HEAD + b"hello world")
    assert await http.receive_some(5) == b"hello"  # reads the head first (a request: AUTO)
    assert http.head is not None
    assert await http.receive_request() == ("POST", "/form")
    buf = bytearray(3)
    assert await http.receive_into(buf) == 3
    assert buf == b" wo"
    raw = await http.detach()
    assert await raw.receive_some(100) == b"rld"
    await a.aclose()
    await b.aclose()


async def test_upgrade_switches_protocol_below() -> None:
    """A 101 and the new protocol's first bytes in one write: they stay for the next layer."""
    a, b = ta.socketpair()
    client = await HTTPLayer().attach(a)
    await client.send_request("GET", "/chat")
    for name, value in (("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade")):
        await client.send_field(name, value)
    await client.done()
    server = await HTTPLayer().attach(b)
    assert await server.receive_request() == ("GET", "/chat")
    assert ("Upgrade", "websocket") in await server.receive_fields()
    await server.send_status(101, "Switching Protocols")
    await server.send_field("Upgrade", "websocket")
    await server.done()
    assert await server.detach() is b
    await b.send_all(b"\x81\x02hi")  # a frame of the new protocol right behind the head
    assert await client.receive_status() == (101, "Switching Protocols")
    assert await client.detach() is a
    assert await a.receive_some(100) == b"\x81\x02hi"
    await a.aclose()
    await b.aclose()


async def test_on_a_stack_over_tcp() -> None:
    a, b = await tcp_pair()
    async with ta.ProtocolStack(a) as stack:
        http = await stack.push(HTTPLayer())
        assert repr(stack).endswith(" > http>")
        await b.send_all(b"HTTP/1.1 204 No Content\r\nServer: t\r\n\r\nafter")
        assert await http.receive_status(after(5)) == (204, "No Content")
        assert await stack.pop() is a
        assert await a.receive_some(100) == b"after"
    await b.aclose()


async def test_message_stream_below_is_protocol_mismatch() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(2).attach(a)
    with pytest.raises(ta.ProtocolMismatch):
        await HTTPLayer().attach(msgs)
    assert msgs.closed
    await b.aclose()


# -- bad input, bad calls --------------------------------------------------------------------------


async def test_malformed_request_can_still_be_answered() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    await a.send_all(b"GET / HTTP/1.1\r\nBad Field: x\r\n\r\n")
    with pytest.raises(HTTPProtocolError) as info:
        await http.receive_request()
    assert info.value.errno == errno.EPROTO
    assert info.value.status_hint == 400
    with pytest.raises(HTTPProtocolError):  # sticky
        await http.receive_some()
    await http.send_status(info.value.status_hint, "Bad Request")
    await http.send_field("Connection", "close")
    await http.send_eof()  # ends the head, then half-closes
    assert await receive_until_eof(a) == (b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    with pytest.raises(HTTPProtocolError):
        await http.detach()  # a failed detach closes the stack, as in libdill
    assert b.closed
    await a.aclose()


@pytest.mark.parametrize(
    ("wire", "error", "code"),
    [
        (b"GET /" + b"x" * 200, HeaderTooLarge, errno.EMSGSIZE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", ta.ConnectionBroken, errno.ECONNRESET),
        (b"", PeerDone, errno.EPIPE),
        (b"HTTP/1.1 200 OK\r\n\r\n", HTTPProtocolError, errno.EPROTO),
    ],
)
async def test_receive_errors(wire: bytes, error: type[Exception], code: int) -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer(max_line_size=100).attach(b)
    await a.send_all(wire)
    await a.send_eof()
    with pytest.raises(error) as info:
        await http.receive_request(after(5))
    assert getattr(info.value, "errno", None) == code
    await http.aclose()
    await a.aclose()


async def test_detach_before_any_head_after_the_end() -> None:
    """The peer closed without a head: detach succeeds (libdill's term_detach does too)."""
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    await a.send_eof()
    assert await http.detach() is b
    assert await b.receive_some() == b""
    await a.aclose()
    await b.aclose()


async def test_bad_calls() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(a)
    with pytest.raises(ta.InvalidArgument):
        await http.send_all(b"body before any head")
    with pytest.raises(ta.InvalidArgument):
        await http.receive_field()  # no start line received yet
    with pytest.raises(ta.InvalidArgument):
        await http.send_request("GET", "/a b")
    with pytest.raises(ta.InvalidArgument):
        await http.send_status(200, "OK", deadline=-5)
    await http.send_status(200, "OK")
    with pytest.raises(ta.InvalidArgument):
        await http.send_field("X:Y", "1")
    with pytest.raises(ta.InvalidArgument):
        await http.send_all(b"body before done")
    await http.done()
    with pytest.raises(ta.SendAfterDone) as info:
        await http.done()
    assert info.value.errno == errno.EPIPE
    await http.send_all(b"body")
    assert await b.receive_some(100) == b"HTTP/1.1 200 OK\r\n\r\nbody"
    with pytest.raises(ta.InvalidArgument):
        HTTPLayer(max_header_size=0)
    assert "max_line_size=8192" in repr(HTTPLayer())
    await http.aclose()
    await b.aclose()


async def test_two_receivers_conflict() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(http.receive_request)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await http.receive_status()
        await a.send_all(HEAD)
    await http.aclose()
    await a.aclose()


# -- deadlines -------------------------------------------------------------------------------------


async def test_deadline_mid_head_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    await a.send_all(HEAD[:20])
    start = trio.current_time()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await http.receive_request(after(5))
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - start == pytest.approx(5)
    with trio.move_on_after(1):  # a cancel mid-head loses nothing either
        await http.receive_request()
    await a.send_all(HEAD[20:] + b"hello world")
    assert await http.receive_request(ta.IMMEDIATE) == ("POST", "/form")  # already there
    raw = await http.detach(ta.IMMEDIATE)
    assert await raw.receive_some(100) == b"hello world"
    await a.aclose()
    await b.aclose()


async def test_immediate_with_nothing_fails_at_once(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(b)
    start = trio.current_time()
    calls = (
        lambda: http.receive_status(ta.IMMEDIATE),
        lambda: http.receive_some(10, ta.IMMEDIATE),
        lambda: http.receive_into(bytearray(10), ta.IMMEDIATE),
        lambda: http.detach(ta.IMMEDIATE),
    )
    for call in calls:
        with pytest.raises(ta.DeadlineExceeded):
            await call()
        assert trio.current_time() == start
    assert b.closed  # the failed detach closed the stack
    await a.aclose()


async def test_tls_through_the_body(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    """A CONNECT-style tunnel without detaching: TLS pushed on the HTTP streams passes
    check_layer (the HTTP layer's non-blocking paths serve the layer above)."""

    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        client, proxy = await attach_both(a, b, HTTPLayer().attach, HTTPLayer().attach)
        await client.send_request("CONNECT", "example.org:443")
        await client.send_field("Host", "example.org:443")
        await client.done()
        assert await proxy.receive_request() == ("CONNECT", "example.org:443")
        await proxy.send_status(200, "Connection established")
        await proxy.done()
        assert await client.receive_status() == (200, "Connection established")
        return await tls_pair(client, proxy, tls_ca, tls_server_cert)

    await check_layer(attach_pair)


async def test_head_one_byte_at_a_time() -> None:
    """Every byte of the head in its own write: the head parses, the body comes back whole."""
    a, b = ta.memory_pair()
    http = await HTTPLayer().attach(b)
    wire = b"\r\n" + HEAD + b"hello world"

    async def trickle() -> None:
        for i in range(len(wire)):
            await a.send_all(wire[i : i + 1])
            await trio.testing.wait_all_tasks_blocked()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert await http.receive_request() == ("POST", "/form")
        assert await http.receive_fields() == [("Host", "h"), ("Content-Length", "11")]
        assert await receive_exactly(http, 11) == b"hello world"
    await http.aclose()
    await a.aclose()


async def test_a_head_longer_than_one_read_with_a_large_body() -> None:
    """A 40 KiB head (more than one 16 KiB read) and 1 MiB behind it: the body streams on."""
    a, b = await tcp_pair()
    http = await HTTPLayer().attach(b)
    fields = [(f"X-Field-{i}", "v" * 1000) for i in range(40)]
    head = b"GET /big HTTP/1.1\r\nHost: h\r\n"
    head += b"".join(f"{name}: {value}\r\n".encode() for name, value in fields) + b"\r\n"
    body = bytes(range(256)) * 4096

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, head + body)
        assert await http.receive_request(after(5)) == ("GET", "/big")
        assert await http.receive_fields() == [("Host", "h"), *fields]
        assert http.head is not None
        assert http.head.size == len(head)
        raw = await http.detach()
        assert await receive_exactly(raw, len(body)) == body
    await a.aclose()
    await b.aclose()


async def test_pipelined_requests_by_attaching_again() -> None:
    """Two requests in one write: the second waits in front of the stream after a detach."""
    a, b = ta.socketpair()
    await a.send_all(HEAD + b"hello world" + b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")
    http = await HTTPLayer().attach(b)
    assert await http.receive_request() == ("POST", "/form")
    assert await receive_exactly(http, 11) == b"hello world"
    http = await HTTPLayer().attach(await http.detach())
    assert await http.receive_request() == ("GET", "/second")
    assert await http.receive_fields() == [("Host", "h")]
    with pytest.raises(ta.DeadlineExceeded):
        await http.receive_some(10, ta.IMMEDIATE)  # nothing after the second head
    await http.aclose()
    await a.aclose()


async def test_a_cancelled_send_leaves_the_head_as_it_was() -> None:
    a, b = ta.socketpair()
    http = await HTTPLayer().attach(a)
    with trio.CancelScope() as scope:
        scope.cancel()
        await http.send_request("GET", "/")
    await http.send_request("GET", "/")  # not "already sent": nothing was
    await http.send_field("Host", "h")
    await http.done()
    assert await b.receive_some(100) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    await http.aclose()
    await b.aclose()
