"""The TLS layer: conformance on every transport, data paths, half-close, detach, stacking."""

import random
import ssl

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._tls import _SEND_BROKEN as SEND_BROKEN
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both, check_layer, tls_pair


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(
    transport: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        return await tls_pair(a, b, tls_ca, tls_server_cert)

    await check_layer(attach_pair, transport_pair=transport)  # type: ignore[arg-type]


async def test_check_layer_under_mock_clock(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        return await tls_pair(a, b, tls_ca, tls_server_cert)

    await check_layer(attach_pair)  # type: ignore[arg-type]


async def test_bulk_both_ways_every_transport(
    transport_pair: tuple[ta.ByteStream, ta.ByteStream],
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    client, server = await tls_pair(*transport_pair, tls_ca, tls_server_cert)
    rnd = random.Random(11)
    data = (rnd.randbytes(3_000_000), rnd.randbytes(3_000_000))

    async def send(stream: ta.TLSStream, payload: bytes) -> None:
        for i in range(0, len(payload), 100_000):
            await stream.send_all(payload[i : i + 100_000])

    async def receive(stream: ta.TLSStream, expected: bytes) -> None:
        got = bytearray()
        buf = bytearray(70_000)
        while len(got) < len(expected):
            n = await stream.receive_into(buf)
            got += memoryview(buf)[:n]
        assert got == expected

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(send, client, data[0])
        nursery.start_soon(send, server, data[1])
        nursery.start_soon(receive, server, data[0])
        nursery.start_soon(receive, client, data[1])


async def test_257_writes_of_2777_read_as_2777_reads_of_257(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    blocks = [bytes([i % 251]) * 2777 for i in range(257)]

    async def send() -> None:
        for block in blocks:
            await client.send_all(block)

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        got = bytearray()
        buf = bytearray(257)
        for _ in range(2777):
            n = 0
            while n < 257:
                n += await server.receive_into(memoryview(buf)[n:])
            got += buf
        assert got == b"".join(blocks)


async def test_fast_path_keeps_order_with_random_sizes_and_interleaved_tasks(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Regression test for the receive fast path (many records per call, pushback, drain)."""
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    rnd = random.Random(2026)
    total = 4_000_000
    payloads = {id(client): rnd.randbytes(total), id(server): rnd.randbytes(total)}

    async def sender(stream: ta.TLSStream, seed: int) -> None:
        sizes = random.Random(seed)
        data = payloads[id(stream)]
        i = 0
        while i < total:
            n = sizes.choice([1, 7, 16384, 16385, 65536, 200_000, sizes.randint(1, 300_000)])
            await stream.send_all(data[i : i + n])
            i += n

    async def receiver(stream: ta.TLSStream, peer: ta.TLSStream, seed: int) -> None:
        sizes = random.Random(seed)
        got = bytearray()
        while len(got) < total:
            if sizes.random() < 0.5:
                buf = bytearray(sizes.randint(1, 150_000))
                n = await stream.receive_into(buf)
                got += buf[:n]
            else:
                got += await stream.receive_some(sizes.randint(1, 150_000))
        assert got == payloads[id(peer)]

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(sender, client, 1)
        nursery.start_soon(sender, server, 2)
        nursery.start_soon(receiver, server, client, 3)
        nursery.start_soon(receiver, client, server, 4)


@pytest.mark.parametrize("client_first", [True, False])
async def test_half_close_in_both_orders(
    client_first: bool, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    first, second = (client, server) if client_first else (server, client)
    async with client, server:
        await first.send_all(b"last words")
        await ta.tls_done(first)
        with pytest.raises(ta.SendAfterDone):
            await first.send_all(b"more")
        assert await second.receive_some(100) == b"last words"
        assert await second.receive_some(100) == b""
        assert await second.receive_some(100) == b""  # EOF is sticky
        await second.send_all(b"reply after the peer's done")
        assert await first.receive_some(100) == b"reply after the peer's done"
        await second.send_eof()
        assert await first.receive_some(100) == b""


async def test_detach_with_raw_bytes_in_the_same_segment(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The peer's close_notify and raw bytes arrive together: the raw bytes are handed back."""
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    # Queue the server's close_notify, then send it and raw bytes in one system call.
    server._start_shutdown()
    segment = server._outgoing.read() + b"RAW AFTER TLS"
    server._set(SEND_BROKEN)  # the send side is ours now; do not let the layer send again
    await server._below._send_all(segment, ta.FOREVER)  # type: ignore[attr-defined]
    tcp = await ta.tls_detach(client)
    assert tcp is a
    got = b""
    while len(got) < len(b"RAW AFTER TLS"):
        got += await tcp.receive_some(100)
    assert got == b"RAW AFTER TLS"
    await tcp.aclose()
    await server.aclose()


async def test_detach_then_plaintext_both_ways(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    await client.send_all(b"secret")
    assert await server.receive_some(100) == b"secret"

    async def server_side() -> None:
        raw = await server.detach()
        assert raw is b
        await raw.send_all(b"plain from server")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        raw_client = await client.detach()
    assert raw_client is a
    assert await raw_client.receive_some(100) == b"plain from server"
    await raw_client.send_all(b"plain from client")
    assert await b.receive_some(100) == b"plain from client"
    with pytest.raises(ta.BadHandle):
        await client.send_all(b"the TLS handle is gone")
    await a.aclose()
    await b.aclose()


async def test_detach_keeps_unread_application_data_apart(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Our documented choice: unread TLS data is not merged into the plaintext stream."""
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    await server.send_all(b"unread")

    async def server_side() -> None:
        raw = await server.detach()
        await raw.send_all(b"RAW")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        raw_client = await client.detach()
    assert client.unread_data == b"unread"
    assert await raw_client.receive_some(100) == b"RAW"
    await a.aclose()
    await b.aclose()


async def test_starttls(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    client_stack, server_stack = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client_stack, server_stack:
        await a.send_all(b"EHLO x\r\nSTARTTLS\r\n")
        got = b""
        while not got.endswith(b"STARTTLS\r\n"):
            got += await b.receive_some(100)
        await b.send_all(b"220 go ahead\r\n")
        assert await a.receive_some(100) == b"220 go ahead\r\n"
        client, server = await attach_both(
            client_stack,
            server_stack,
            lambda s: s.push(ta.TLSClientLayer(tls_ca, server_hostname="localhost")),
            lambda s: s.push(ta.TLSServerLayer(tls_server_cert)),
        )
        assert repr(client_stack) == "<ProtocolStack unix > tls(client, TLSv1.3)>"
        await client.send_all(b"MAIL FROM:<a@b>\r\n")
        assert await server.receive_some(100) == b"MAIL FROM:<a@b>\r\n"


async def test_tls_in_tls(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    client_stack, server_stack = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client_stack, server_stack:
        for _ in range(2):
            await attach_both(
                client_stack,
                server_stack,
                lambda s: s.push(ta.TLSClientLayer(tls_ca, server_hostname="localhost")),
                lambda s: s.push(ta.TLSServerLayer(tls_server_cert)),
            )
        inner_client, inner_server = client_stack.top, server_stack.top
        assert isinstance(inner_client, ta.TLSStream)
        assert isinstance(inner_server, ta.TLSStream)
        assert len(client_stack.layers) == 3
        payload = random.Random(5).randbytes(1_000_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inner_client.send_all, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await inner_server.receive_some()
        assert got == payload
        # Detach the inner session on both ends: the outer TLS carries plaintext again.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_stack.pop)
            outer_client = await client_stack.pop()
        assert isinstance(outer_client, ta.TLSStream)
        await outer_client.send_all(b"outer only")
        outer_server = server_stack.top
        assert isinstance(outer_server, ta.TLSStream)
        assert await outer_server.receive_some(100) == b"outer only"


async def test_typed_attributes_through_the_stack(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    from trio_tlsattach.testing import PassThroughLayer

    a, b = ta.socketpair()
    client, server = await attach_both(
        a,
        b,
        ta.TLSClientLayer(tls_ca, server_hostname="localhost", alpn=["h2", "http/1.1"]).attach,
        ta.TLSServerLayer(tls_server_cert, alpn=["http/1.1"]).attach,
    )
    stack = ta.ProtocolStack(client)
    top = await stack.push(PassThroughLayer())
    assert top.extra(ta.TLSAttribute.alpn) == "http/1.1"
    assert top.extra(ta.TLSAttribute.tls_version) == "TLSv1.3"
    assert top.extra(ta.TLSAttribute.server_side) is False
    assert top.extra(ta.TLSAttribute.peer_cert)["subjectAltName"][0] == ("DNS", "localhost")
    assert isinstance(top.extra(ta.TLSAttribute.peer_cert_der), bytes)
    assert server.extra(ta.TLSAttribute.server_hostname) == "localhost"  # SNI seen
    assert server.alpn == "http/1.1"
    assert client.selected_alpn_protocol() == "http/1.1"
    assert client.cipher() is not None
    await stack.aclose()
    await server.aclose()


async def test_drop_in_for_ssl_stream(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = trio.testing.memory_stream_pair()
    server = ta.TLSStream(a, server_ssl_context, server_side=True)
    client = ta.TLSStream(b, client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:  # lazy handshake on first use
        nursery.start_soon(client.send_all, b"lazy")
        assert await server.receive_some(10) == b"lazy"
    assert server.transport_stream.label() == "stream"

    async def server_unwrap() -> None:
        stream, trailing = await server.unwrap()
        assert stream is a
        assert trailing == b""

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_unwrap)
        stream, _ = await client.unwrap()
    assert stream is b
    await a.aclose()
    await b.aclose()


async def test_session_resumption_with_a_reused_layer(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context()
        tls_ca.configure_trust(context)
        context.maximum_version = version
        client_layer = ta.TLSClientLayer(context, server_hostname="localhost")
        server_layer = ta.TLSServerLayer(tls_server_cert)
        reused = []
        for _ in range(3):
            client, server = await attach_both(
                *ta.socketpair(), client_layer.attach, server_layer.attach
            )
            await server.send_all(b"x")  # in 1.3 the ticket follows the handshake
            assert await client.receive_some(1) == b"x"
            reused.append(client.session_reused)
            await client.aclose()
            await server.aclose()
        assert reused == [False, True, True], version
        assert client_layer.cached_session is not None


async def test_explicit_session(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    server_layer = ta.TLSServerLayer(tls_server_cert)
    first = ta.TLSClientLayer(tls_ca, server_hostname="localhost", session_cache=False)
    client, server = await attach_both(*ta.socketpair(), first.attach, server_layer.attach)
    await server.send_all(b"x")
    await client.receive_some(1)
    session = client.session
    await client.aclose()
    await server.aclose()
    assert first.cached_session is None
    second = ta.TLSClientLayer(tls_ca, server_hostname="localhost", session=session)
    client, server = await attach_both(*ta.socketpair(), second.attach, server_layer.attach)
    assert client.session_reused
    assert client.extra(ta.TLSAttribute.session_reused)
    await client.aclose()
    await server.aclose()


async def test_two_senders_at_once_is_busy(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"x" * 20_000_000)
                await trio.testing.wait_all_tasks_blocked()
                await client.send_all(b"y")


async def test_aclose_sends_close_notify_and_closes_below(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    await client.aclose()
    assert a.closed
    assert await server.receive_some(10) == b""  # a clean close, not ECONNRESET
    await server.aclose()


async def test_session_cached_when_the_client_closes_right_after_the_handshake(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The TLS 1.3 ticket arrives after the handshake; closing must still pick it up."""
    client_layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost")
    server_layer = ta.TLSServerLayer(tls_server_cert)
    reused = []
    for _ in range(3):
        client, server = await attach_both(
            *ta.socketpair(), client_layer.attach, server_layer.attach
        )
        reused.append(client.session_reused)
        await client.aclose()
        await server.aclose()
    assert reused == [False, True, True]
