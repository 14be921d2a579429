"""Transports: conformance, bulk transfer, receive_into, ownership and error mapping."""

import array
import errno
import random
import socket

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach.testing import TRANSPORT_PAIRS, PassThroughLayer, tcp_pair, unix_pair


@pytest.mark.parametrize("name", list(TRANSPORT_PAIRS))
async def test_conformance(name: str) -> None:
    await trio.testing.check_half_closeable_stream(TRANSPORT_PAIRS[name], None)  # type: ignore[arg-type]


async def test_unix_conformance(tmp_path_factory: pytest.TempPathFactory) -> None:
    async def make() -> tuple[ta.SocketTransport, ta.SocketTransport]:
        return await unix_pair(tmp_path_factory.mktemp("u") / "s")

    await trio.testing.check_half_closeable_stream(make, None)  # type: ignore[arg-type]


async def test_bulk_both_ways_random_chunks(
    transport_pair: tuple[ta.ByteStream, ta.ByteStream],
) -> None:
    a, b = transport_pair
    size = 10 * 1024 * 1024
    rnd = random.Random(7)
    payloads = (rnd.randbytes(size), rnd.randbytes(size))

    async def send(stream: ta.ByteStream, data: bytes, seed: int) -> None:
        chunks = random.Random(seed)
        i = 0
        while i < len(data):
            n = chunks.randint(1, 300_000)
            await stream.send_all(data[i : i + n])
            i += n

    async def receive(stream: ta.ByteStream, expected: bytes, seed: int) -> None:
        sizes = random.Random(seed)
        got = bytearray()
        buf = bytearray(400_000)
        while len(got) < len(expected):
            view = memoryview(buf)[: sizes.randint(1, len(buf))]
            n = await stream.receive_into(view)
            assert n > 0
            got += view[:n]
        assert got == expected

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, a, payloads[0], 1)
        nursery.start_soon(send, b, payloads[1], 2)
        nursery.start_soon(receive, b, payloads[0], 3)
        nursery.start_soon(receive, a, payloads[1], 4)


async def test_receive_into_buffer_kinds() -> None:
    a, b = ta.socketpair()
    async with a, b:
        await a.send_all(b"abcdefgh")
        target = bytearray(b"--------")
        assert await b.receive_into(memoryview(target)[2:5]) == 3
        assert target == b"--abc---"
        arr = array.array("i", [0, 0])  # 8 bytes, item size 4: cast to bytes
        assert await b.receive_into(arr) == 5
        assert arr.tobytes()[:5] == b"defgh"


@pytest.mark.parametrize("bad", [bytearray(), b"readonly"])
async def test_receive_into_bad_buffers(bad: object) -> None:
    a, b = ta.socketpair()
    async with a, b:
        with pytest.raises(ta.InvalidArgument) as info:
            await b.receive_into(bad)
        assert info.value.errno == errno.EINVAL


async def test_send_of_a_str_is_rejected() -> None:
    a, b = ta.socketpair()
    async with a, b:
        with pytest.raises(TypeError):
            await a.send_all("text")  # type: ignore[arg-type]
        with pytest.raises(ta.InvalidArgument, match=">= 1"):
            await b.receive_some(0)


async def test_ownership_after_attach() -> None:
    a, b = ta.socketpair()
    top = await PassThroughLayer().attach(a)
    for call in (a.send_all(b"x"), a.receive_some(1), a.send_eof(), a.aclose()):
        with pytest.raises(ta.BadHandle) as info:
            await call
        assert info.value.errno == errno.EBADF
    assert a.status == "owned"
    back = await top.detach()
    assert back is a
    assert a.status == "open"
    await a.send_all(b"mine again")
    assert await b.receive_some(20) == b"mine again"
    with pytest.raises(ta.BadHandle):
        await top.send_all(b"x")  # the detached layer is dead
    await a.aclose()
    await b.aclose()


async def test_two_senders_conflict() -> None:
    a, b = ta.socketpair()
    async with a, b:
        big = b"x" * 10_000_000

        async def sender() -> None:
            await a.send_all(big)

        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                await trio.testing.wait_all_tasks_blocked()
                await a.send_all(b"y")


async def test_send_after_eof_and_peer_reset() -> None:
    a, b = ta.socketpair()
    await a.send_eof()
    with pytest.raises(ta.SendAfterDone) as info:
        await a.send_all(b"x")
    assert info.value.errno == errno.EPIPE
    assert await b.receive_some(10) == b""
    await a.aclose()
    await b.aclose()


async def test_peer_reset_is_connection_broken() -> None:
    a, b = await tcp_pair()
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await a.aclose()  # linger 0: an RST instead of a FIN
    with pytest.raises(ta.ConnectionBroken) as info:
        await b.receive_some(10)
    assert info.value.errno == errno.ECONNRESET
    await b.aclose()


async def test_wrap_trio_socket_stream_takes_the_socket() -> None:
    a, b = socket.socketpair()
    old = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    wrapped = ta.wrap_stream(old)
    assert isinstance(wrapped, ta.SocketTransport)
    assert old.socket.fileno() == -1  # the old object gave its fd away
    other = ta.SocketTransport(b)
    async with wrapped, other:
        await wrapped.send_all(b"hi")
        assert await other.receive_some(10) == b"hi"
    with pytest.raises(ta.InvalidArgument):
        ta.wrap_stream(42)


async def test_pushback_is_served_first() -> None:
    a, b = ta.socketpair()
    async with a, b:
        await a.send_all(b"world")
        await trio.testing.wait_all_tasks_blocked()
        b.unread(b"hello ")
        buf = bytearray(3)
        assert await b.receive_into(buf) == 3
        assert buf == b"hel"
        assert await b.receive_some(100) == b"lo "
        assert await b.receive_some(100) == b"world"


async def test_attributes_and_labels(tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = await tcp_pair()
    async with a, b:
        assert a.label() == "tcp"
        assert a.extra(ta.StackAttribute.transport) == "tcp"
        assert a.extra(ta.StackAttribute.remote_address) == b.extra(ta.StackAttribute.local_address)
        with pytest.raises(LookupError):
            a.extra(ta.TLSAttribute.alpn)
        assert a.extra(ta.TLSAttribute.alpn, None) is None
    u, v = await unix_pair(tmp_path_factory.mktemp("u") / "s")
    async with u, v:
        assert u.label() == "unix"
    p, q = ta.pipe_pair()
    async with p, q:
        assert p.label() == "pipe"


async def test_open_tcp_and_unix(tmp_path_factory: pytest.TempPathFactory) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await ta.open_tcp("127.0.0.1", port)
    server = await listeners[0].accept()
    async with client, server:
        await client.send_all(b"tcp")
        assert await server.receive_some(10) == b"tcp"
    await listeners[0].aclose()
    path = str(tmp_path_factory.mktemp("u") / "sock")
    lsock = trio.socket.socket(trio.socket.AF_UNIX)
    await lsock.bind(path)
    lsock.listen()
    uclient = await ta.open_unix(path)
    userver, _ = await lsock.accept()
    async with uclient:
        await uclient.send_all(b"unix")
        assert await userver.recv(10) == b"unix"
    userver.close()
    lsock.close()


async def test_open_pipe_on_existing_fds() -> None:
    import os

    r, w = os.pipe()
    t = ta.open_pipe(r, w)
    async with t:
        await t.send_all(b"loop")
        assert await t.receive_some(10) == b"loop"
    with pytest.raises(ta.InvalidArgument):
        ta.open_pipe(-1, 1)
