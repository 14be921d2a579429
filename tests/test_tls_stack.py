"""TLS in stacks: STARTTLS, TLS inside TLS, and detach (lossless, both ways, every version)."""

import random
import ssl

import pytest
import trio
import trio.testing
import trustme
from _tls_helpers import receive_exactly

import trio_tlsattach as ta
from trio_tlsattach._tlswire import _SEND_BROKEN as SEND_BROKEN
from trio_tlsattach.testing import PassThroughLayer, attach_both

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_layer(ca: trustme.CA, version: str | None = None) -> ta.TLSClientLayer:
    """A client layer trusting ``ca``; ``version`` caps the protocol (no session cache)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if version is not None:
        context.maximum_version = VERSIONS[version]
    return ta.TLSClientLayer(context, server_hostname="localhost", session_cache=False)


async def pair(
    a: object, b: object, ca: trustme.CA, cert: trustme.LeafCert, version: str | None = None
) -> tuple[ta.TLSStream, ta.TLSStream]:
    """(client on ``a``, server on ``b``), handshaken."""
    client, server = await attach_both(
        a, b, client_layer(ca, version).attach, ta.TLSServerLayer(cert).attach
    )
    if version is not None:
        assert client.tls_version == server.tls_version == f"TLSv{version}"
    return client, server


# --- STARTTLS -----------------------------------------------------------------------------------


async def test_starttls_lines_then_push(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """SMTP-like: CRLF lines in plaintext, STARTTLS, then TLS pushed on the same stack.

    The client sends its ClientHello right behind reading "220 go ahead": the server's line
    layer may have read it already, and popping that layer must hand it back to TLS.
    """
    a, b = ta.socketpair()
    async with ta.ProtocolStack(a) as client_stack, ta.ProtocolStack(b) as server_stack:

        async def server() -> None:
            lines = await server_stack.push(ta.CRLFLayer())
            await lines.send_message(b"220 ready")
            assert await lines.receive_message() == b"EHLO client"
            await lines.send_message(b"250 STARTTLS")
            assert await lines.receive_message() == b"STARTTLS"
            await lines.send_message(b"220 go ahead")
            await server_stack.pop()  # the ClientHello may already sit in its buffer
            tls = await server_stack.push(ta.TLSServerLayer(tls_server_cert))
            assert repr(server_stack) == "<ProtocolStack unix > tls(server, TLSv1.3)>"
            inner = await server_stack.push(ta.CRLFLayer())
            assert await inner.receive_message() == b"MAIL FROM:<a@example.com>"
            await inner.send_message(b"250 ok, over " + str(tls.tls_version).encode())

        async def client() -> None:
            lines = await client_stack.push(ta.CRLFLayer())
            assert await lines.receive_message() == b"220 ready"
            await lines.send_message(b"EHLO client")
            assert await lines.receive_message() == b"250 STARTTLS"
            await lines.send_message(b"STARTTLS")
            assert await lines.receive_message() == b"220 go ahead"
            await client_stack.pop()
            await client_stack.push(client_layer(tls_ca))
            inner = await client_stack.push(ta.CRLFLayer())
            await inner.send_message(b"MAIL FROM:<a@example.com>")
            assert await inner.receive_message() == b"250 ok, over TLSv1.3"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            nursery.start_soon(client)
        assert repr(client_stack) == "<ProtocolStack unix > tls(client, TLSv1.3) > crlf>"


async def test_starttls_plaintext_then_push(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client_stack, server_stack = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client_stack, server_stack:
        await a.send_all(b"EHLO x\r\nSTARTTLS\r\n")
        assert await receive_exactly(b, 18) == b"EHLO x\r\nSTARTTLS\r\n"
        await b.send_all(b"220 go ahead\r\n")
        assert await receive_exactly(a, 14) == b"220 go ahead\r\n"
        client: ta.TLSStream
        server: ta.TLSStream
        client, server = await attach_both(
            client_stack,
            server_stack,
            lambda s: s.push(client_layer(tls_ca)),
            lambda s: s.push(ta.TLSServerLayer(tls_server_cert)),
        )
        assert client_stack.find(ta.TLSStream) is client
        with pytest.raises(ta.BadHandle):  # the plaintext handle belongs to TLS now
            await a.send_all(b"injected")
        await client.send_all(b"MAIL FROM:<a@b>\r\n")
        assert await server.receive_some(100) == b"MAIL FROM:<a@b>\r\n"


# --- TLS in TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_tls_in_tls(
    version: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client_stack, server_stack = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client_stack, server_stack:
        for _ in range(2):
            await attach_both(
                client_stack,
                server_stack,
                lambda s: s.push(client_layer(tls_ca, version)),
                lambda s: s.push(ta.TLSServerLayer(tls_server_cert)),
            )
        assert repr(client_stack) == (
            f"<ProtocolStack unix > tls(client, TLSv{version}) > tls(client, TLSv{version})>"
        )
        inner_client, inner_server = client_stack.top, server_stack.top
        assert isinstance(inner_client, ta.TLSStream)
        assert isinstance(inner_server, ta.TLSStream)
        assert len(client_stack.layers) == 3
        rnd = random.Random(5)
        up, down = rnd.randbytes(1_000_000), rnd.randbytes(700_000)
        async with trio.open_nursery() as nursery:  # full duplex through both layers
            nursery.start_soon(inner_client.send_all, up)
            nursery.start_soon(inner_server.send_all, down)
            assert await receive_exactly(inner_server, len(up)) == up
            assert await receive_exactly(inner_client, len(down)) == down
        # Detach the inner session on both ends: the outer TLS carries plaintext again.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_stack.pop)
            outer_client = await client_stack.pop()
        assert isinstance(outer_client, ta.TLSStream)
        assert inner_client.status == "detached"
        await outer_client.send_all(b"outer only")
        outer_server = server_stack.top
        assert isinstance(outer_server, ta.TLSStream)
        assert await receive_exactly(outer_server, 10) == b"outer only"
        # And the outer one too: raw bytes on the socket.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_stack.pop)
            raw = await client_stack.pop()
        assert raw is a
        await b.send_all(b"raw")
        assert await receive_exactly(a, 3) == b"raw"


# --- detach -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_detach_with_raw_bytes_in_the_same_segment(
    version: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The peer's close_notify and raw bytes arrive together: the raw bytes are handed back."""
    a, b = ta.socketpair()
    client, server = await pair(a, b, tls_ca, tls_server_cert, version)
    await server.send_all(b"last TLS data")
    # Queue the server's close_notify, then send it and raw bytes in one system call.
    server._start_shutdown()
    segment = server._outgoing.read() + b"RAW AFTER TLS"
    server._set(SEND_BROKEN)  # the send side is ours now; do not let the layer send again
    below = server._below
    assert isinstance(below, ta.ByteStream)
    await below._send_all(segment, ta.FOREVER)
    assert await receive_exactly(client, 13) == b"last TLS data"
    raw = await ta.tls_detach(client)
    assert raw is a
    assert client.unread_data == b""
    assert await receive_exactly(raw, 13) == b"RAW AFTER TLS"
    await raw.send_all(b"client raw")
    await server.aclose()
    await raw.aclose()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_detach_then_plaintext_both_ways(
    version: str,
    transport_pair: tuple[ta.ByteStream, ta.ByteStream],
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    a, b = transport_pair
    client, server = await pair(a, b, tls_ca, tls_server_cert, version)
    await client.send_all(b"secret")
    assert await receive_exactly(server, 6) == b"secret"

    async def server_side() -> None:
        raw = await server.detach(ta.after(10))
        assert raw is b
        await raw.send_all(b"plain from server")  # right behind its close_notify

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        raw_client = await client.detach(ta.after(10))
    assert raw_client is a
    assert client.status == server.status == "detached"
    assert await receive_exactly(raw_client, 17) == b"plain from server"
    await raw_client.send_all(b"plain from client")
    assert await receive_exactly(b, 17) == b"plain from client"
    with pytest.raises(ta.BadHandle):
        await client.send_all(b"the TLS handle is gone")
    with pytest.raises(ta.BadHandle):
        await server.receive_some(1)


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_detach_keeps_unread_application_data_apart(
    version: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Our documented choice (libdill fails here): unread TLS data is not merged below.

    It is kept in ``unread_data``: merging decrypted bytes into the plaintext stream would let
    bytes cross the security boundary.
    """
    a, b = ta.socketpair()
    client, server = await pair(a, b, tls_ca, tls_server_cert, version)
    await server.send_all(b"unread, part 1; ")
    assert await client.receive_some(6) == b"unread"  # a partial read leaves decrypted bytes
    await server.send_all(b"part 2")

    async def server_side() -> None:
        raw = await server.detach()
        assert isinstance(raw, ta.ByteStream)
        await raw.send_all(b"RAW")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        raw_client = await client.detach()
    assert isinstance(raw_client, ta.ByteStream)
    assert client.unread_data == b", part 1; part 2"
    assert await receive_exactly(raw_client, 3) == b"RAW"
    assert server.unread_data == b""
    await a.aclose()
    await b.aclose()


async def test_detach_after_the_peer_is_done(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The peer's close_notify came long ago (tls_done); detach still finishes cleanly."""
    a, b = ta.socketpair()
    client, server = await pair(a, b, tls_ca, tls_server_cert)
    await ta.tls_done(server)
    assert await client.receive_some(10) == b""
    await client.send_all(b"still talking")
    assert await receive_exactly(server, 13) == b"still talking"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ta.tls_detach, server)
        raw = await ta.tls_detach(client)
    assert raw is a
    await b.send_all(b"x")
    assert await receive_exactly(a, 1) == b"x"
    await a.aclose()
    await b.aclose()


async def test_pop_through_a_pass_through_layer(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """TLS on a pass-through layer: bytes read past close_notify travel down two layers."""
    a, b = ta.socketpair()
    client_stack, server_stack = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client_stack, server_stack:
        await client_stack.push(PassThroughLayer())
        await server_stack.push(PassThroughLayer())
        await attach_both(
            client_stack,
            server_stack,
            lambda s: s.push(client_layer(tls_ca)),
            lambda s: s.push(ta.TLSServerLayer(tls_server_cert)),
        )
        assert repr(client_stack) == "<ProtocolStack unix > pass > tls(client, TLSv1.3)>"

        async def server() -> None:
            raw = await server_stack.pop()
            assert isinstance(raw, ta.ByteStream)
            await raw.send_all(b"after TLS")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            passthrough = await client_stack.pop()
        assert isinstance(passthrough, ta.ByteStream)
        assert await receive_exactly(passthrough, 9) == b"after TLS"
        assert await client_stack.pop() is a


async def test_detach_before_the_handshake_runs_it(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """The drop-in form handshakes lazily; detaching first still does a whole TLS session."""
    a, b = ta.socketpair()
    server = ta.TLSStream(a, server_ssl_context, server_side=True)
    client = ta.TLSStream(b, client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.detach)
        assert await client.detach() is b
    assert client.tls_version == "TLSv1.3"
    await a.aclose()
    await b.aclose()


async def test_unwrap_returns_trailing_bytes(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """``trio.SSLStream.unwrap`` semantics: what followed close_notify is returned, not kept."""
    a, b = trio.testing.memory_stream_pair()
    server = ta.TLSStream(a, server_ssl_context, server_side=True)
    client = ta.TLSStream(b, client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        await server.do_handshake()
    server._start_shutdown()
    await a.send_all(server._take_outgoing() + b"TRAILING")  # the tickets, close_notify
    server._set(SEND_BROKEN)
    stream, trailing = await client.unwrap()
    assert stream is b
    assert trailing == b"TRAILING"
    await a.aclose()
    await b.aclose()
