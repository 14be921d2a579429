"""The two faces of TLSStream, each with its own contract, chosen by how the stream was made.

``TLSStream(transport, ctx, ...)`` is trio.SSLStream (graceful aclose, NeedHandshakeError,
the transport kept as given; trio's own suite checks it in full, ``interop/test_trio_ssl_suite``):
here are the cases where the two contracts part, and that each one stays its own. The layers
and ``tls_attach_server_mem`` keep libdill's (forceful aclose, the stream below owned).
"""

from __future__ import annotations

import contextlib
import ssl
import types

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach import _tls

GUARDED = ("session_reused", "getpeercert", "selected_npn_protocol", "cipher", "shared_ciphers",
           "compression", "get_channel_binding", "selected_alpn_protocol", "version")  # fmt: skip
"""trio.SSLStream's ``_after_handshake`` names."""


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    client = await trio.testing.open_stream_to_socket_listener(listener)
    server = await listener.accept()
    await listener.aclose()
    assert isinstance(client, trio.SocketStream)
    return client, server


def _dropin(
    a: object, b: object, client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext
) -> tuple[ta.TLSStream, ta.TLSStream]:
    """A client on ``a`` and a server on ``b``, made as trio.SSLStream users make them."""
    client = ta.TLSStream(a, client_ctx, server_hostname="localhost")
    return client, ta.TLSStream(b, server_ctx, server_side=True)


async def _handshake(*streams: ta.TLSStream) -> None:
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(stream.do_handshake)


async def test_dropin_keeps_the_socket_stream_and_its_fast_path(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = await _tcp_pair()
    client, server = _dropin(a, b, client_ssl_context, server_ssl_context)
    assert client.transport_stream is a
    assert isinstance(client.below, ta.SocketTransport)  # its socket, driven without waiting
    assert client.below.socket is a.socket._sock  # the very same socket object
    for name in GUARDED:
        with pytest.raises(trio.NeedHandshakeError):
            getattr(client, name) if name == "session_reused" else getattr(client, name)()
    assert client.tls_version is None  # this package's own names: None before
    assert client.extra(ta.TLSAttribute.alpn) is None
    await _handshake(client, server)
    assert client.version() == "TLSv1.3"
    await client.send_all(b"ping")
    assert await server.receive_some() == b"ping"
    await client.aclose()
    assert a.socket.fileno() == -1  # closing TLS closed the SocketStream's socket, once
    assert await server.receive_some() == b""  # a close_notify came first
    await server.aclose()


async def test_dropin_unwrap_hands_back_the_socket_stream_usable(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = await _tcp_pair()
    client, server = _dropin(a, b, client_ssl_context, server_ssl_context)
    await _handshake(client, server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.unwrap)
        plain, trailing = await client.unwrap()
    assert plain is a
    await a.send_all(b"in the clear")
    got = trailing + await b.receive_some(100)
    assert got == b"in the clear"
    await a.aclose()
    await b.aclose()


async def test_dropin_aclose_waits_to_send_close_notify_a_layer_stream_does_not(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On a stream without a buffer, close_notify leaves only when the peer reads: the drop-in
    waits for that as trio.SSLStream does; libdill's hclose gives up after a grace period."""
    for dropin in (True, False):
        a, b = trio.testing.lockstep_stream_pair()
        server = ta.TLSStream(b, server_ssl_context, server_side=True)
        if dropin:
            client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
            await _handshake(client, server)
        else:
            layer = ta.TLSClientLayer(client_ssl_context, server_hostname="localhost")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                client = await layer.attach(a)
        start = trio.current_time()
        with trio.move_on_after(30) as waited:
            await client.aclose()
        if dropin:
            assert waited.cancelled_caught  # still waiting for the peer to read: cancelled,
            assert client.closed  # the stream below closed forcefully, as trio's
        else:
            assert trio.current_time() - start <= ta._base.CLOSE_GRACE
        await trio.aclose_forcefully(server)


async def test_dropin_aclose_runs_the_handshake_and_its_failure_is_raised(
    server_ssl_context: ssl.SSLContext,
) -> None:
    a, b = ta.socketpair()
    untrusting = ssl.create_default_context()  # does not trust the test CA
    client, server = _dropin(a, b, untrusting, server_ssl_context)

    async def refused() -> None:
        with pytest.raises(ta.TLSError):  # the client's alert
            await server.do_handshake()
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refused)
        with pytest.raises(ta.TLSError, match="handshake failed") as info:
            await client.aclose()
    assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert client.closed
    assert a.closed


async def test_dropin_eof_without_close_notify_is_caused_by_ssl_eof(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = ta.socketpair()
    client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost", https_compatible=True)
    server = ta.TLSStream(b, server_ssl_context, server_side=True)
    await _handshake(client, server)
    await server.send_all(b"bye")
    assert await client.receive_some() == b"bye"  # the session tickets are read too
    await client.aclose()  # HTTPS mode: no close_notify
    with pytest.raises(ta.ConnectionBroken, match="without close_notify") as info:
        await server.receive_some()
    assert isinstance(info.value.__cause__, ssl.SSLEOFError)
    await server.aclose()  # broken: closes without a word, without an error


async def test_dropin_cancelled_handshake_leaves_it_broken_and_aclose_quiet(
    client_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = ta.socketpair()
    client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
    with trio.move_on_after(1):
        await client.do_handshake()  # nobody answers
    with pytest.raises(ta.ConnectionBroken):
        await client.do_handshake()
    await client.aclose()  # no second handshake, no wait
    assert a.closed
    await b.aclose()


async def test_layer_stream_keeps_libdill_ownership_of_a_socket_stream(
    tls_server_cert: object, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = await _tcp_pair()
    client_layer = ta.TLSClientLayer(client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.aclose_forcefully, b)
        with pytest.raises(ta.ConnectionBroken):
            await client_layer.attach(a, ta.after(10))
    assert a.socket.fileno() == -1  # taken over by the attach, then closed by its failure


async def test_receive_some_sizes_its_buffer_to_the_data(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """A big max_bytes does not allocate that much per call, and loses nothing."""
    a, b = ta.socketpair()
    client, server = _dropin(a, b, client_ssl_context, server_ssl_context)
    await _handshake(client, server)
    payload = bytes(range(256)) * 4096  # 1 MiB
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, payload)
        while len(got) < len(payload):
            chunk = await server.receive_some(8 * 1024 * 1024)
            assert type(chunk) is bytes
            assert 0 < len(chunk) <= 4 * 64 * 1024 + server._incoming.pending + 65536
            got += chunk
    assert got == payload
    await client.aclose()
    await server.aclose()


async def test_dropin_on_a_socket_stream_of_unknown_make_adapts_it(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trio whose socket wrapper hides its standard socket elsewhere: the SocketStream is
    adapted through its own methods (slower), never taken away."""
    a, b = await _tcp_pair()
    # What _tls takes for a standard socket matches nothing trio's wrapper holds.
    monkeypatch.setattr(_tls, "socket", types.SimpleNamespace(socket=type("Other", (), {})))
    client, server = _dropin(a, b, client_ssl_context, server_ssl_context)
    assert isinstance(client.below, ta.StreamTransport)
    assert client.transport_stream is a
    await _handshake(client, server)
    await client.send_all(b"through the adapter")
    assert await server.receive_some() == b"through the adapter"
    await client.aclose()
    assert a.socket.fileno() == -1
    assert await server.receive_some() == b""
    await server.aclose()


async def test_tickets_ride_with_the_answer_to_a_request_already_here(
    tls_server_cert: trustme.LeafCert, client_ssl_context: ssl.SSLContext
) -> None:
    """A TLS 1.3 server's session tickets leave at once when the client sent nothing more
    (a client that only reads still resumes next time), but wait for the answer when the
    client's request came right behind its Finished: one send per connection fewer."""
    servers: list[ta.TLSStream] = []

    async def serve(b: ta.SocketTransport) -> None:
        servers.append(await ta.TLSServerLayer(tls_server_cert).attach(b, ta.after(10)))

    for request in (b"", b"GET /"):
        a, b = ta.socketpair()
        client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, b)
            await client.do_handshake()
            if request:  # sent before the server reads the Finished (no checkpoint between)
                await client.send_all(request)
        server = servers[-1]
        assert bool(server._delayed) == bool(request)  # held back only behind a request
        if request:
            assert await server.receive_some() == request
        await server.send_all(b"200")  # held-back tickets go in front of it
        assert await client.receive_some() == b"200"
        assert client.session is not None
        assert client.session.has_ticket
        await client.aclose()
        await server.aclose()


async def test_dropin_tls_in_tls_closes_each_level_gracefully(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """As trio.SSLStream closes its transport with the transport's own aclose, a drop-in over
    a drop-in says close_notify at both levels; trio.SSLStream on the other end checks it."""
    a, b = trio.testing.memory_stream_pair()
    outer = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
    inner = ta.TLSStream(outer, client_ssl_context, server_hostname="localhost")
    server_outer = trio.SSLStream(b, server_ssl_context, server_side=True)
    server_inner = trio.SSLStream(server_outer, server_ssl_context, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_inner.do_handshake)
        await inner.do_handshake()
    assert inner.transport_stream is outer
    await inner.aclose()
    assert inner.closed
    assert outer.closed
    assert await server_inner.receive_some() == b""  # the inner close_notify
    assert await server_outer.receive_some() == b""  # and then the outer one: a clean end
    await server_inner.aclose()


async def test_tickets_wait_for_a_request_that_came_while_the_handshake_ended(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """The server reads the client's Finished alone; its request lands while OpenSSL ends the
    handshake. The server looks once more before the tickets go, and they wait for the answer
    (one send fewer) instead of leaving on their own."""
    a, b = ta.socketpair()
    server = ta.TLSStream(b, server_ssl_context, server_side=True)
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ssl_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    real_handshake = server._ssl.do_handshake

    def handshake_then_request() -> None:
        real_handshake()  # raises until the Finished is in: the request is not sent before
        client.write(b"GET /")
        a.socket.send(client_out.read())

    server._ssl.do_handshake = handshake_then_request  # type: ignore[method-assign]
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    a.socket.send(client_out.read())  # the ClientHello
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        while not client_out.pending:  # the server's flight in, the Finished out
            await trio.lowlevel.wait_readable(a.socket)
            client_in.write(a.socket.recv(65536))
            with contextlib.suppress(ssl.SSLWantReadError):
                client.do_handshake()
        a.socket.send(client_out.read())
    assert server._delayed  # the tickets wait
    assert await server.receive_some() == b"GET /"
    await server.send_all(b"200")  # the tickets go in front of it
    await trio.lowlevel.wait_readable(a.socket)
    client_in.write(a.socket.recv(65536))
    assert client.read(100) == b"200"
    assert client.session is not None
    assert client.session.has_ticket
    await server.aclose()
    await a.aclose()
