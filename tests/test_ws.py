"""The WebSocket layer: contract, messages, control frames, close and detach, bad input, facade,
and ws_relay (what ``tlsattach serve --ws`` runs)."""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._cores.ws import BAD_REQUEST, WebSocketError, WSCore, WSState
from trio_tlsattach._ws import (
    WS_BINARY,
    WS_NOHTTP,
    WS_TEXT,
    WSLayer,
    WSStream,
    ws_attach_client,
    ws_attach_server,
    ws_detach,
    ws_done,
    ws_recv,
    ws_send,
    ws_status,
)
from trio_tlsattach._wsrelay import ws_relay
from trio_tlsattach.testing import (
    TRANSPORT_PAIRS,
    attach_both,
    check_layer,
    stack_pair,
    tls_pair,
)

MASK = b"\x01\x02\x03\x04"


def masked(first: int, payload: bytes) -> bytes:
    """A client frame (masked, payload under 126 bytes) with the given first byte."""
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([first, 0x80 | len(payload)]) + MASK + body


async def ws_pair(**kwargs: Any) -> tuple[WSStream, WSStream, ta.SocketTransport]:
    """Client and server WebSocket over a socketpair: (client, server, the client's transport)."""
    a, b = ta.socketpair()
    client, server = await attach_both(
        a, b, WSLayer(**kwargs).attach, WSLayer(server_side=True, **kwargs).attach
    )
    return client, server, a


async def raw_server(**kwargs: Any) -> tuple[WSStream, ta.SocketTransport]:
    """Our server (frames only) and the raw socket a test writes client frames to."""
    a, b = ta.socketpair()
    return await WSLayer(server_side=True, http=False, **kwargs).attach(b), a


async def receive_all(stream: ta.ByteStream) -> bytes:
    got = b""
    while chunk := await stream.receive_some():
        got += chunk
    return got


# -- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("http", [True, False], ids=["upgrade", "nohttp"])
@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(transport: str, http: bool, autojump_clock: trio.abc.Clock) -> None:
    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        client, server = WSLayer(http=http), WSLayer(server_side=True, http=http)
        return await attach_both(a, b, client.attach, server.attach)

    await check_layer(attach_pair, transport_pair=transport)


async def test_check_layer_over_tls(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert, autojump_clock: trio.abc.Clock
) -> None:
    """wss: WebSocket on our TLS layer; detach hands the TLS stream back."""

    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        tls_a, tls_b = await tls_pair(a, b, tls_ca, tls_server_cert)
        client, server = WSLayer(host="localhost"), WSLayer(server_side=True)
        return await attach_both(tls_a, tls_b, client.attach, server.attach)

    await check_layer(attach_pair)


async def test_on_a_protocol_stack_over_tls(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await stack_pair(
        (
            ta.TLSClientLayer(tls_ca, server_hostname="localhost"),
            ta.TLSServerLayer(tls_server_cert),
        ),
        (WSLayer(resource="/stacked"), WSLayer(server_side=True)),
    )
    async with client, server:
        assert repr(client).endswith(" > ws(client)>")
        assert client.top.extra(ta.TLSAttribute.tls_version) is not None  # found through ws
        ours, theirs = client.top, server.top
        assert isinstance(ours, WSStream)
        assert isinstance(theirs, WSStream)
        await ours.send_message(b"through the stack")
        assert await theirs.receive_message() == b"through the stack"
        assert theirs.resource == "/stacked"
        async with trio.open_nursery() as nursery:  # pop: the close handshake on both ends
            nursery.start_soon(client.pop)
            nursery.start_soon(server.pop)
        tls_ours, tls_theirs = client.top, server.top
        assert isinstance(tls_ours, ta.TLSStream)
        assert isinstance(tls_theirs, ta.TLSStream)
        await tls_ours.send_all(b"plain TLS again")
        assert await tls_theirs.receive_some() == b"plain TLS again"


# -- messages ------------------------------------------------------------------------------------


async def test_text_is_str_binary_is_bytes() -> None:
    client, server, _ = await ws_pair()
    assert repr(client) == "<WSStream ws(client)>"
    await client.send("héllo")
    await client.send(b"\x00\xff")
    await client.send(bytearray(b"ba"))
    assert await server.receive() == "héllo"
    assert await server.receive() == b"\x00\xff"
    await client.send("as bytes")
    assert await server.receive_message() == b"ba"
    assert await server.receive_message() == b"as bytes"  # text, as its UTF-8
    server.unread_message(b"again")
    assert await server.receive() == b"again"
    with pytest.raises(ta.InvalidArgument):
        await client.send(12)
    await client.aclose()
    await server.aclose()


async def test_text_layer_sends_text_and_checks_utf8() -> None:
    client, server, _ = await ws_pair(text=True)
    await client.send_message("é".encode())
    assert await server.receive() == "é"
    with pytest.raises(ta.InvalidArgument):
        await client.send_message(b"\xff")  # refused before anything is sent
    await client.send_message(b"ok")
    assert await server.receive() == "ok"
    await client.aclose()
    await server.aclose()


async def test_fragmented_message_is_reassembled() -> None:
    server, raw = await raw_server()
    await raw.send_all(
        masked(0x01, b"fra")  # text, not final
        + masked(0x89, b"mid-message ping")  # control frames may come between fragments
        + masked(0x00, "gmé".encode())
        + masked(0x80, b"nted")  # final continuation
    )
    assert await server.receive() == "fragménted"
    assert await raw.receive_some() == b"\x8a\x10mid-message ping"  # answered
    await server.aclose()
    await raw.aclose()


async def test_oversized_message_is_skipped_and_the_stream_goes_on() -> None:
    client, server, _ = await ws_pair(max_size=100)
    await client.send(b"x" * 101)
    await client.send("y" * 51 + "é" * 25)  # 101 bytes of UTF-8
    await client.send(b"fits" * 25)
    for _ in range(2):
        with pytest.raises(ta.MessageTooLarge) as info:
            await server.receive()
        assert info.value.errno == errno.EMSGSIZE
    assert await server.receive() == b"fits" * 25
    await client.aclose()
    await server.aclose()


async def test_ping_during_a_long_send_waits_for_the_message_to_end() -> None:
    """A pong never cuts into a message another task is sending: the sender flushes it."""
    client, server, _ = await ws_pair(max_size=1 << 23)
    big = b"z" * (4 << 20)  # far more than the socket buffers hold
    got: list[bytes | str | None] = []

    async def receive_one() -> None:
        got.append(await server.receive())  # reads the ping while the send is blocked

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send, big)
        await trio.testing.wait_all_tasks_blocked()
        await client.ping(b"during")
        nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        assert await client.receive() == big
        await client.send(b"sync")
    assert got == [b"sync"]
    await server.send(b"after")
    assert await client.receive() == b"after"  # the pong came between the two
    assert client.pongs_received == 1
    await client.aclose()
    await server.aclose()


async def test_a_peer_gone_before_our_pong_still_has_its_messages_read() -> None:
    server, raw = await raw_server()
    await raw.send_all(
        masked(0x89, b"ping") + masked(0x82, b"last words") + masked(0x88, b"\x03\xe8")
    )
    await raw.aclose()  # gone: the pong cannot be delivered
    assert await server.receive() == b"last words"
    assert await server.receive() is None
    assert server.close_status == 1000
    with pytest.raises(trio.BrokenResourceError):
        await server.send(b"nobody listens")
    await server.aclose()


# -- done, close, detach -------------------------------------------------------------------------


async def test_done_sends_status_and_reason() -> None:
    client, server, _ = await ws_pair()
    await client.send_eof(status=4000, reason="custom")
    with pytest.raises(ta.SendAfterDone) as info:
        await client.send(b"late")
    assert info.value.errno == errno.EPIPE
    await client.send_eof()  # a second done does nothing
    assert await server.receive() is None
    assert (server.close_status, server.close_reason) == (4000, "custom")
    assert ws_status(server) == (4000, "custom")
    assert ws_status(client) is None
    with pytest.raises(ta.InvalidArgument):
        await server.send_eof(status=1006)
    await server.send(b"after the peer's close")  # libdill's half-close
    assert await client.receive() == b"after the peer's close"
    await server.send_eof(status=1000, reason="OK")
    assert await client.receive() is None
    assert (client.close_status, client.close_reason) == (1000, "OK")
    await client.aclose()
    await server.aclose()


async def test_detach_gives_back_trailing_bytes_and_keeps_unread_messages() -> None:
    server, raw = await raw_server()
    await raw.send_all(
        masked(0x82, b"unread")
        + masked(0x88, struct.pack("!H", 1000) + b"OK")
        + b"plain bytes after the close"
    )
    below = await ws_detach(server, 1001, "going")
    assert below is not None
    assert server.status == "detached"
    assert server.unread_messages == [b"unread"]
    assert (server.close_status, server.close_reason) == (1000, "OK")
    assert await below.receive_some() == b"plain bytes after the close"
    assert await raw.receive_some() == b"\x88\x07\x03\xe9going"  # our close, unmasked
    await below.aclose()
    await raw.aclose()


async def test_detach_fails_and_closes_the_stack_when_the_close_never_comes(
    autojump_clock: trio.abc.Clock,
) -> None:
    server, raw = await raw_server()
    below = server.below
    with pytest.raises(ta.DeadlineExceeded):
        await server.detach(ta.after(5))
    assert server.closed
    assert below is not None
    assert below.closed
    await raw.aclose()


async def test_aclose_says_going_away() -> None:
    server, raw = await raw_server()
    await server.aclose()
    assert await receive_all(raw) == b"\x88\x02\x03\xe9"  # close 1001, then the end
    await raw.aclose()


async def test_end_without_close_is_connection_broken() -> None:
    server, raw = await raw_server()
    await raw.send_all(masked(0x82, b"last"))
    await raw.send_eof()
    assert await server.receive() == b"last"
    with pytest.raises(ta.ConnectionBroken) as info:
        await server.receive()
    assert info.value.errno == errno.ECONNRESET
    await server.aclose()
    await raw.aclose()


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "code"),
    [(b"\x82\x02hi", 1002), (masked(0xC2, b"hi"), 1002), (masked(0x81, b"\xc3\x28"), 1007)],
    ids=["unmasked", "reserved-bit", "bad-utf8"],
)
async def test_bad_frame_is_eproto_after_the_good_ones(bad: bytes, code: int) -> None:
    server, raw = await raw_server()
    await raw.send_all(masked(0x82, b"good") + masked(0x81, b"also good") + bad)
    assert await server.receive() == b"good"
    assert await server.receive() == "also good"
    for _ in range(2):
        with pytest.raises(WebSocketError) as info:
            await server.receive()
        assert info.value.errno == errno.EPROTO
        assert info.value.close_code == code
        assert isinstance(info.value, ta.ProtocolViolation)  # so a trio.BrokenResourceError
    answer = await raw.receive_some()
    assert answer[:4] == b"\x88" + bytes([len(answer) - 2]) + struct.pack("!H", code)
    await server.aclose()
    await raw.aclose()


async def test_malformed_upgrade_gets_400_and_closes_the_stream() -> None:
    a, b = ta.socketpair()
    await a.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(WebSocketError) as info:
        await WSLayer(server_side=True).attach(b)
    assert info.value.errno == errno.EPROTO
    assert b.closed
    assert await receive_all(a) == BAD_REQUEST
    await a.aclose()


async def test_wrong_accept_fails_the_client_and_closes_the_stream() -> None:
    a, b = ta.socketpair()

    async def bad_server() -> None:
        while b"\r\n\r\n" not in await b.receive_some():
            pass  # a request fits one read on a socketpair
        await b.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bad_server)
        with pytest.raises(WebSocketError, match="accept"):
            await WSLayer().attach(a)
    assert a.closed
    await b.aclose()


async def test_over_long_response_header_is_eproto() -> None:
    a, b = ta.socketpair()
    await b.send_all(b"HTTP/1.1 101 Switching Protocols\r\nX-Long: " + b"a" * 70000)
    with pytest.raises(WebSocketError):
        await WSLayer().attach(a)
    await b.aclose()


async def test_handshake_deadline_and_early_end(autojump_clock: trio.abc.Clock) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.DeadlineExceeded):
        await WSLayer(server_side=True).attach(b, ta.after(3))
    assert b.closed
    await a.aclose()
    a, b = ta.socketpair()
    await a.send_eof()
    with pytest.raises(ta.ConnectionBroken):
        await WSLayer(server_side=True).attach(b)
    await a.aclose()


async def test_attach_refuses_message_streams_and_bad_parameters() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    with pytest.raises(ta.ProtocolMismatch):
        await WSLayer().attach(msgs)
    assert a.closed
    await b.aclose()
    for kwargs in ({"resource": "x"}, {"max_size": 0}, {"server_side": 1}, {"text": "yes"}):
        with pytest.raises(ta.InvalidArgument):
            WSLayer(**kwargs)
    c, d = ta.socketpair()
    with pytest.raises(ta.InvalidArgument):
        await WSLayer().attach(c, deadline=-5)
    assert c.status == "open"  # EINVAL before the stream is touched
    await c.aclose()
    await d.aclose()
    layer = WSLayer(server_side=True, max_size=10)
    assert (layer.server_side, layer.max_size) == (True, 10)
    assert "server_side=True" in repr(layer)


# -- libdill's facade ----------------------------------------------------------------------------


async def test_libdill_facade() -> None:
    a, b = ta.socketpair()
    client, server = await attach_both(
        a,
        b,
        lambda s: ws_attach_client(s, WS_TEXT, "/res", "host.example"),
        lambda s: ws_attach_server(s, WS_BINARY),
    )
    assert (server.resource, server.host) == ("/res", "host.example")
    assert server.server_side
    assert not client.server_side
    await ta.msend(client, b"text by default")  # WS_TEXT: msend sends text
    await ws_send(client, WS_BINARY, b"binary")
    await ws_send(server, WS_TEXT, "back")
    assert await ws_recv(server) == (WS_TEXT, "text by default")
    assert await ws_recv(server) == (WS_BINARY, b"binary")
    assert await ws_recv(client) == (WS_TEXT, "back")
    await ws_done(client, 1000, "done")
    assert await ws_recv(server) is None
    assert await ta.mrecv(server) is None
    with pytest.raises(ta.InvalidArgument):
        await ws_send(server, 8, b"x")
    with pytest.raises(ta.NotSupported):
        await ws_done(a, 1000)  # type: ignore[arg-type]
    below = await ws_detach(server)
    assert below is b
    await b.aclose()
    await client.aclose()


async def test_libdill_nohttp_flag() -> None:
    a, b = ta.socketpair()
    client, server = await attach_both(
        a,
        b,
        lambda s: ws_attach_client(s, WS_NOHTTP | WS_BINARY),
        lambda s: ws_attach_server(s, WS_NOHTTP),
    )
    await client.send(b"framed at once")
    assert await server.receive() == b"framed at once"
    assert server.core.state is WSState.OPEN
    assert isinstance(server.core, WSCore)
    await client.aclose()
    await server.aclose()


# -- ws_relay --------------------------------------------------------------------------------------


async def test_relay_echo() -> None:
    a, b = ta.socketpair()
    counts = [0, 0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws_relay, b, None, counts)
        ws = await WSLayer(resource="/echo").attach(a)
        await ws.send("héllo")
        assert await ws.receive() == "héllo"
        await ws.send(b"\x00" * 70000)
        assert await ws.receive() == b"\x00" * 70000
        await ws.send_eof(status=1000, reason="OK")
        assert await ws.receive() is None
        assert ws.close_status == 1000
    assert counts == [70006, 70006]
    assert b.status == "open"  # handed back to the caller
    await b.aclose()
    await ws.aclose()


async def test_relay_to_a_backend_with_half_closes() -> None:
    a, b = ta.socketpair()
    near, far = ta.socketpair()
    counts = [0, 0]

    async def backend() -> None:
        got = b""
        while len(got) < 6:
            got += await far.receive_some()
        await far.send_all(got.upper())
        await far.send_eof()
        assert await far.receive_some() == b""  # the WebSocket peer's close, passed on

    async def open_far() -> ta.SocketTransport:
        return near

    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend)
        nursery.start_soon(ws_relay, b, open_far, counts)
        ws = await WSLayer().attach(a)
        await ws.send("abc")
        await ws.send(b"def")
        got = b""
        while (message := await ws.receive()) is not None:
            assert isinstance(message, bytes)  # the backend's bytes come back as binary
            got += message
        assert got == b"ABCDEF"
        assert ws.close_status == 1000
        await ws.send_eof()
    assert counts == [6, 6]
    assert near.closed
    await b.aclose()
    await far.aclose()
    await ws.aclose()


async def test_relay_bad_input_is_raised_and_closes_the_stream() -> None:
    a, b = ta.socketpair()
    await a.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(WebSocketError):
        await ws_relay(b, None, [0, 0])
    assert b.closed
    await a.aclose()


async def test_relay_ends_an_idle_connection(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    errors: list[BaseException] = []

    async def relay() -> None:
        try:
            await ws_relay(b, None, [0, 0], idle_timeout=30)
        except ta.DeadlineExceeded as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
        ws = await WSLayer().attach(a)
        start = trio.current_time()
        await trio.sleep(20)
        await ws.send("still here")  # traffic pushes the idle deadline forward
        assert await ws.receive() == "still here"
        assert await ws.receive() is None  # 30 s later the relay gives up, going away
    assert ws.close_status == 1001
    assert trio.current_time() - start == pytest.approx(50)
    assert len(errors) == 1
    assert b.closed
    await ws.aclose()
