"""The TLS layer: conformance on every transport, data paths, half-close, detach, stacking."""

import itertools
import random
import ssl

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._tls import PLAIN_LENT
from trio_tlsattach._transports import FdTransport
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both, check_layer, tls_pair


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(
    transport: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        return await tls_pair(a, b, tls_ca, tls_server_cert)

    await check_layer(attach_pair, transport_pair=transport)


@pytest.mark.parametrize("transport", ["socketpair", "memory"])
async def test_check_layer_server_on_the_first_end(
    transport: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The kit's checks are not symmetric (who detaches first, who sends EOF): swap the ends."""

    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        server, client = await attach_both(
            a,
            b,
            ta.TLSServerLayer(tls_server_cert).attach,
            ta.TLSClientLayer(tls_ca, server_hostname="localhost").attach,
        )
        return server, client

    await check_layer(attach_pair, transport_pair=transport)


async def test_check_layer_under_mock_clock(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    async def attach_pair(a: object, b: object) -> tuple[ta.TLSStream, ta.TLSStream]:
        return await tls_pair(a, b, tls_ca, tls_server_cert)

    await check_layer(attach_pair)


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


async def test_receive_some_larger_than_the_lent_buffer_comes_in_steps(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """``receive_some`` decrypts into a lent buffer of at most PLAIN_LENT bytes: a larger
    ``max_bytes`` gets bytes (not a view of the buffer) in steps, and nothing is lost or
    reordered when small and large reads follow each other."""
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    data = random.Random(7).randbytes(3 * PLAIN_LENT + 12345)
    got = bytearray()
    sizes = []
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, data)
        for max_bytes in itertools.cycle([10 * PLAIN_LENT, 1, 100_000, PLAIN_LENT + 1]):
            if len(got) == len(data):
                break
            chunk = await server.receive_some(max_bytes)
            assert type(chunk) is bytes
            assert 0 < len(chunk) <= min(max_bytes, PLAIN_LENT)
            sizes.append(len(chunk))
            got += chunk
    assert got == data
    assert max(sizes) > 1


async def test_a_peer_task_in_this_process_costs_no_epoll_wait(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that finds the socket empty yields before it registers a wait: when the sender
    is a task of this process it has sent by then, whichever order Trio runs the two in, so 200
    messages read 64 KiB at a time cost far fewer than 200 waits (at most the 16 that follow a
    look that found nothing, e.g. in the handshake)."""
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    waits = 0
    wait_readable = FdTransport._wait_readable

    async def counted(self: FdTransport) -> None:
        nonlocal waits
        waits += 1
        await wait_readable(self)

    monkeypatch.setattr(FdTransport, "_wait_readable", counted)
    message = random.Random(3).randbytes(16384)

    async def send() -> None:
        for _ in range(200):
            await client.send_all(message)

    got = bytearray()
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while len(got) < 200 * len(message):
            got += await server.receive_some()
    assert got == message * 200
    assert waits <= 20


async def test_a_receive_that_yields_before_waiting_still_honours_its_deadline(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert, autojump_clock: trio.testing.MockClock
) -> None:
    """A read yields once before it waits (the peer may be a task of this process); a peer
    that sends nothing still costs the deadline, the stream stays usable, and the data that
    comes later is read whole."""
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        for _ in range(20):  # the yielding read, then the ones that wait at once
            start = trio.current_time()
            with pytest.raises(ta.DeadlineExceeded):
                await server.receive_some(deadline=ta.after(5))
            assert trio.current_time() - start == pytest.approx(5)
        with trio.move_on_after(5) as scope:
            await server.receive_some()
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"late")
            assert await server.receive_some() == b"late"


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
    peer_cert = top.extra(ta.TLSAttribute.peer_cert)
    assert peer_cert is not None
    assert peer_cert["subjectAltName"][0] == ("DNS", "localhost")
    assert isinstance(top.extra(ta.TLSAttribute.peer_cert_der), bytes)
    assert server.extra(ta.TLSAttribute.server_hostname) == "localhost"  # SNI seen
    assert server.alpn == "http/1.1"
    assert client.selected_alpn_protocol() == "http/1.1"
    assert client.cipher() is not None
    await stack.aclose()
    await server.aclose()


async def test_the_ssl_object_names_trio_ssl_stream_forwards(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        binding = client.get_channel_binding()
        assert isinstance(binding, bytes)
        assert binding  # and the same on both ends, as SCRAM-PLUS needs
        assert server.get_channel_binding("tls-unique") == binding
        with pytest.raises(ValueError, match="not implemented"):
            client.get_channel_binding("tls-server-end-point")  # CPython has tls-unique only
        shared = server.shared_ciphers()
        assert shared is not None
        assert ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128) in shared
        assert client.compression() is None
        for name in ("context", "server_side", "server_hostname", "session", "session_reused",
                     "getpeercert", "cipher", "shared_ciphers", "compression",
                     "get_channel_binding", "selected_alpn_protocol", "version"):  # fmt: skip
            assert hasattr(client, name), name


async def test_drop_in_for_ssl_stream(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = trio.testing.memory_stream_pair()
    server = ta.TLSStream(a, server_ssl_context, server_side=True)
    client = ta.TLSStream(b, client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:  # lazy handshake on first use
        nursery.start_soon(client.send_all, b"lazy")
        assert await server.receive_some(10) == b"lazy"
    assert server.transport_stream is a  # the stream given, as trio.SSLStream has it

    async def server_unwrap() -> None:
        stream, trailing = await server.unwrap()
        assert stream is a
        assert trailing == b""

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_unwrap)
        stream, _ = await client.unwrap()
    assert stream is b
    assert client.transport_stream is None  # detached: the stream is the caller's again
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


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_explicit_session(
    version: ssl.TLSVersion, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """``session=`` from a previous connection resumes it. In TLS 1.3 the ticket comes after
    the handshake, so the first client reads some data before taking ``.session``."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    context.maximum_version = version
    server_layer = ta.TLSServerLayer(tls_server_cert)
    first = ta.TLSClientLayer(context, server_hostname="localhost", session_cache=False)
    client, server = await attach_both(*ta.socketpair(), first.attach, server_layer.attach)
    assert not client.session_reused
    await server.send_all(b"x")
    assert await client.receive_some(1) == b"x"
    session = client.session
    assert session is not None
    await client.aclose()
    await server.aclose()
    assert first.cached_session is None
    second = ta.TLSClientLayer(
        context, server_hostname="localhost", session=session, session_cache=False
    )
    client, server = await attach_both(*ta.socketpair(), second.attach, server_layer.attach)
    assert client.session_reused
    assert server.session_reused
    assert client.extra(ta.TLSAttribute.session_reused)
    assert client.tls_version == server.tls_version == f"TLSv1.{3 if version.value == 772 else 2}"
    await client.aclose()
    await server.aclose()


async def test_full_duplex_5_mb_each_way(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """On each end one task sends 5 MB while another receives 5 MB, on the same stream."""
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    size = 5 * 1024 * 1024
    rnd = random.Random(55)
    up, down = rnd.randbytes(size), rnd.randbytes(size)
    received: dict[str, bytes] = {}

    async def receive(name: str, stream: ta.TLSStream) -> None:
        got = bytearray()
        buf = bytearray(100_000)
        while len(got) < size:
            n = await stream.receive_into(buf)
            assert n, "premature end of stream"
            got += memoryview(buf)[:n]
        received[name] = bytes(got)

    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, up)
        nursery.start_soon(receive, "client", client)
        nursery.start_soon(server.send_all, down)
        nursery.start_soon(receive, "server", server)
    assert received["server"] == up
    assert received["client"] == down


async def test_two_senders_at_once_is_busy(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"x" * 20_000_000)  # nobody reads: blocks
                await trio.testing.wait_all_tasks_blocked()
                await client.send_all(b"y")
        with pytest.RaisesGroup(trio.BusyResourceError):  # and two receivers
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.receive_some, 10)  # the server sends nothing
                await trio.testing.wait_all_tasks_blocked()
                await client.receive_some(10)


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


async def test_client_certificates_both_ways_with_contexts(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Mutual TLS: the layers take any ``ssl.SSLContext``, so a server that requires a client
    certificate and a client that has one are plain contexts; each end sees the other's."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(server_ctx)
    tls_ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    tls_ca.issue_cert("client@example.org").configure_cert(client_ctx)
    client, server = await attach_both(
        *ta.socketpair(),
        ta.TLSClientLayer(client_ctx, server_hostname="localhost").attach,
        ta.TLSServerLayer(server_ctx).attach,
    )
    async with client, server:
        seen = server.extra(ta.TLSAttribute.peer_cert)
        assert seen is not None
        assert ("email", "client@example.org") in seen["subjectAltName"]
        assert client.peer_cert is not None
        await client.send_all(b"authenticated")
        assert await server.receive_some(100) == b"authenticated"
