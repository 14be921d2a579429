"""Transports: conformance, bulk transfer, receive_into, ownership and error mapping."""

import array
import errno
import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach.testing import TRANSPORT_PAIRS, PassThroughLayer, tcp_pair, unix_pair

Pair = tuple[ta.ByteStream, ta.ByteStream]


def _is_fd(stream: ta.ByteStream) -> bool:
    return isinstance(stream, ta.SocketTransport | ta.PipeTransport)


# --- conformance and bulk -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TRANSPORT_PAIRS))
async def test_conformance(name: str) -> None:
    async def make() -> Pair:
        a, b = await TRANSPORT_PAIRS[name]()  # typed as handles; every transport is a byte stream
        assert isinstance(a, ta.ByteStream)
        assert isinstance(b, ta.ByteStream)
        return a, b

    await trio.testing.check_half_closeable_stream(make, None)


async def test_unix_conformance(short_socket_dir: Path) -> None:
    count = 0

    async def make() -> tuple[ta.SocketTransport, ta.SocketTransport]:
        nonlocal count
        count += 1
        return await unix_pair(short_socket_dir / f"s{count}")

    await trio.testing.check_half_closeable_stream(make, None)
    assert count > 1


async def test_bulk_both_ways_random_chunks(transport_pair: Pair) -> None:
    a, b = transport_pair
    size = 10 * 1024 * 1024
    rnd = random.Random(7)
    payloads = (rnd.randbytes(size), rnd.randbytes(size))

    async def send(stream: ta.ByteStream, data: bytes, seed: int) -> None:
        chunks = random.Random(seed)
        view = memoryview(data)
        i = 0
        while i < len(data):
            n = chunks.randint(1, 300_000)
            await stream.send_all(view[i : i + n])
            i += n

    async def receive(stream: ta.ByteStream, expected: bytes, seed: int) -> None:
        sizes = random.Random(seed)
        got = bytearray()
        buf = bytearray(400_000)
        while len(got) < len(expected):
            view = memoryview(buf)[: sizes.randint(1, len(buf))]
            n = await stream.receive_into(view)
            assert 0 < n <= len(view)
            got += view[:n]
        assert len(got) == len(expected)
        assert got == expected

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, a, payloads[0], 1)
        nursery.start_soon(send, b, payloads[1], 2)
        nursery.start_soon(receive, b, payloads[0], 3)
        nursery.start_soon(receive, a, payloads[1], 4)


# --- receive_into and argument checks -----------------------------------------------------------


async def test_receive_into_buffer_kinds(transport_pair: Pair) -> None:
    a, b = transport_pair
    await a.send_all(b"abcdefghijklmnop")

    async def exactly(buffer: Any, n: int) -> None:
        got = 0
        view = memoryview(buffer).cast("B")
        while got < n:
            got += await b.receive_into(view[got:n])

    plain = bytearray(4)
    await exactly(plain, 4)
    assert plain == b"abcd"
    target = bytearray(b"--------")
    await exactly(memoryview(target)[2:], 3)
    assert target == b"--efg---"
    arr = array.array("i", [0, 0])  # 8 bytes with 4-byte items: taken as bytes
    await exactly(arr, 8)
    assert arr.tobytes() == b"hijklmno"
    assert await b.receive_into(bytearray(100)) == 1  # only what is there: b"p"


@pytest.mark.parametrize(
    "bad",
    [bytearray(), memoryview(bytearray(4))[:0], b"readonly", memoryview(b"ro"), "text", 12],
    ids=["empty", "empty-view", "bytes", "ro-view", "str", "int"],
)
async def test_receive_into_bad_buffers(transport_pair: Pair, bad: object) -> None:
    a, b = transport_pair
    with pytest.raises(ta.InvalidArgument) as info:
        await b.receive_into(bad)
    assert info.value.errno == errno.EINVAL
    # Nothing was consumed and the stream still works.
    await a.send_all(b"ok")
    assert await b.receive_some(10) == b"ok"


async def test_receive_into_non_contiguous_is_einval(transport_pair: Pair) -> None:
    _, b = transport_pair
    with pytest.raises(ta.InvalidArgument, match="contiguous"):
        await b.receive_into(memoryview(bytearray(8))[::2])


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
async def test_receive_some_bad_max_bytes(transport_pair: Pair, bad: object) -> None:
    _, b = transport_pair
    with pytest.raises(ta.InvalidArgument) as info:
        await b.receive_some(bad)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("bad", ["text", 42, None, [1, 2]])
async def test_send_of_a_non_buffer_is_einval_typeerror(transport_pair: Pair, bad: Any) -> None:
    a, b = transport_pair
    with pytest.raises(TypeError) as info:
        await a.send_all(bad)
    assert isinstance(info.value, ta.InvalidArgument)
    assert info.value.errno == errno.EINVAL
    await a.send_all(b"fine")
    assert await b.receive_some(10) == b"fine"


async def test_send_accepts_any_bytes_like(transport_pair: Pair) -> None:
    a, b = transport_pair
    await a.send_all(bytearray(b"ab"))
    await a.send_all(memoryview(b"xcdx")[1:3])
    await a.send_all(array.array("B", b"ef"))
    await a.send_all(b"")
    got = b""
    while len(got) < 6:
        got += await b.receive_some(10)
    assert got == b"abcdef"


# --- ownership ----------------------------------------------------------------------------------


async def test_ownership_after_attach(transport_pair: Pair) -> None:
    a, b = transport_pair
    top = await PassThroughLayer().attach(a)
    assert a.status == "owned"
    calls = (
        lambda: a.send_all(b"x"),
        lambda: a.receive_some(1),
        lambda: a.receive_into(bytearray(1)),
        lambda: a.send_eof(),
        lambda: a.wait_send_all_might_not_block(),
        lambda: a.aclose(),
    )
    for call in calls:
        with pytest.raises(ta.BadHandle) as info:
            await call()
        assert info.value.errno == errno.EBADF
        assert isinstance(info.value, trio.ClosedResourceError)
    with pytest.raises(ta.BadHandle):
        await PassThroughLayer().attach(a)  # not the caller's to give
    assert not a.closed
    back = await top.detach()
    assert back is a
    assert a.status == "open"
    assert top.status == "detached"
    await a.send_all(b"mine again")
    assert await b.receive_some(20) == b"mine again"
    with pytest.raises(ta.BadHandle):
        await top.send_all(b"x")  # the detached layer is dead
    await top.aclose()  # and closing it leaves what it handed back alone
    assert not a.closed
    await b.send_all(b"still")
    assert await a.receive_some(10) == b"still"


async def test_closed_transport_is_bad_handle(transport_pair: Pair) -> None:
    a, _ = transport_pair
    await a.aclose()
    assert a.closed
    assert a.status == "closed"
    for call in (lambda: a.send_all(b"x"), lambda: a.receive_some(1)):
        with pytest.raises(ta.BadHandle) as info:
            await call()
        assert info.value.errno == errno.EBADF
    await a.aclose()  # twice is fine


async def test_close_wakes_a_waiting_receiver(transport_pair: Pair) -> None:
    _, b = transport_pair
    with pytest.RaisesGroup(pytest.RaisesExc(ta.BadHandle, check=lambda e: e.errno == errno.EBADF)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive_some, 10)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()


# --- concurrency and directions -----------------------------------------------------------------


async def test_two_senders_conflict(transport_pair: Pair) -> None:
    a, _b = transport_pair
    if not _is_fd(a):
        pytest.skip("a memory stream's send never blocks, so two sends cannot overlap")

    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_all, b"x" * 10_000_000)
            await trio.testing.wait_all_tasks_blocked()
            await a.send_all(b"y")


async def test_two_receivers_conflict(transport_pair: Pair) -> None:
    a, b = transport_pair
    got: list[bytes] = []

    async def first() -> None:
        got.append(await b.receive_some(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await b.receive_some(10)
        await a.send_all(b"first")
    assert got == [b"first"]


async def test_send_after_eof(transport_pair: Pair) -> None:
    a, b = transport_pair
    await a.send_all(b"last")
    await a.send_eof()
    await a.send_eof()  # twice is fine
    with pytest.raises(ta.SendAfterDone) as info:
        await a.send_all(b"x")
    assert info.value.errno == errno.EPIPE
    assert isinstance(info.value, trio.ClosedResourceError)
    got = b""
    while chunk := await b.receive_some(10):
        got += chunk
    assert got == b"last"
    assert await b.receive_some(10) == b""  # EOF is sticky
    await b.send_all(b"other way")  # half-closed: the other direction still works
    assert await a.receive_some(20) == b"other way"


async def test_peer_reset_is_connection_broken() -> None:
    a, b = await tcp_pair()
    a.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await a.aclose()  # linger 0: an RST instead of a FIN
    with pytest.raises(ta.ConnectionBroken) as info:
        await b.receive_some(10)
    assert info.value.errno == errno.ECONNRESET
    assert isinstance(info.value, trio.BrokenResourceError)
    await b.aclose()


async def test_send_to_a_closed_peer_is_connection_broken() -> None:
    a, b = ta.socketpair()
    await b.aclose()

    async def send_until_it_fails() -> None:
        for _ in range(100):
            await a.send_all(b"x" * 65536)

    with pytest.raises(ta.ConnectionBroken) as info:
        await send_until_it_fails()
    assert info.value.errno == errno.ECONNRESET
    await a.aclose()


async def test_clogged_send_times_out_and_breaks_the_direction(
    transport_pair: Pair, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = transport_pair
    if not _is_fd(a):
        pytest.skip("a memory stream never clogs")
    start = trio.current_time()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await a.send_all(b"x" * 50_000_000, deadline=ta.after(3))
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() == start + 3
    # Some bytes went out: the peer is mid-message, so this direction is broken for good.
    with pytest.raises(ta.ConnectionBroken):
        await a.send_all(b"more")
    # The other direction is fine.
    await b.send_all(b"reply")
    assert await a.receive_some(10) == b"reply"


async def test_immediate_send_with_room_succeeds(transport_pair: Pair) -> None:
    a, b = transport_pair
    if not _is_fd(a):
        pytest.skip("IMMEDIATE is best effort on adapted streams")
    await a.send_all(b"now", deadline=ta.IMMEDIATE)
    assert await b.receive_some(10) == b"now"


async def test_immediate_send_into_a_full_buffer_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ta.socketpair()
    async with a, b:
        start = trio.current_time()
        with pytest.raises(ta.DeadlineExceeded):
            await a.send_all(b"x" * 50_000_000, deadline=ta.IMMEDIATE)
        assert trio.current_time() == start


# --- pushback -----------------------------------------------------------------------------------


async def test_pushback_is_served_first(transport_pair: Pair) -> None:
    a, b = transport_pair
    await a.send_all(b"world")
    await trio.testing.wait_all_tasks_blocked()
    b.unread(b"lo ")
    b.unread(b"hel")  # later unreads go in front
    buf = bytearray(2)
    assert await b.receive_into(buf) == 2
    assert buf == b"he"
    assert await b.receive_some(100) == b"llo "  # pushback is served alone, never mixed
    got = b""
    while len(got) < 5:
        got += await b.receive_some(100)
    assert got == b"world"


async def test_pushback_with_immediate_deadline(transport_pair: Pair) -> None:
    _, b = transport_pair
    b.unread(b"there")
    assert await b.receive_some(10, deadline=ta.IMMEDIATE) == b"there"
    with pytest.raises(ta.DeadlineExceeded):
        await b.receive_some(10, deadline=ta.IMMEDIATE)


# --- constructors -------------------------------------------------------------------------------


async def test_wrap_trio_socket_stream_takes_the_socket() -> None:
    a, b = socket.socketpair()
    old = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    wrapped = ta.wrap_stream(old)
    assert isinstance(wrapped, ta.SocketTransport)
    assert old.socket.fileno() == -1  # the old object gave its fd away
    with pytest.raises(trio.ClosedResourceError):
        await old.send_all(b"x")
    other = ta.SocketTransport(b)
    async with wrapped, other:
        await wrapped.send_all(b"hi")
        assert await other.receive_some(10) == b"hi"


async def test_wrap_stream_other_kinds() -> None:
    x, y = trio.testing.memory_stream_pair()
    wrapped = ta.wrap_stream(x)
    assert isinstance(wrapped, ta.StreamTransport)
    assert wrapped.label() == "stream"
    assert ta.wrap_stream(wrapped) is wrapped  # already ours: as it is
    await wrapped.send_all(b"via memory")
    assert await y.receive_some(20) == b"via memory"
    await wrapped.aclose()
    await y.aclose()
    for bad in (42, b"bytes", None):
        with pytest.raises(ta.InvalidArgument):
            ta.wrap_stream(bad)


def test_socket_transport_needs_a_stream_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(ta.InvalidArgument):
        ta.SocketTransport(udp)


async def test_attributes_and_labels(short_socket_dir: Path) -> None:
    a, b = await tcp_pair()
    async with a, b:
        assert a.label() == "tcp"
        assert a.extra(ta.StackAttribute.transport) == "tcp"
        assert a.extra(ta.StackAttribute.remote_address) == b.extra(ta.StackAttribute.local_address)
        assert a.extra(ta.StackAttribute.local_address)[0] == "127.0.0.1"
        with pytest.raises(LookupError):
            a.extra(ta.TLSAttribute.alpn)
        assert a.extra(ta.TLSAttribute.alpn, None) is None
        # Attributes are reachable through a layer attached above.
        top = await PassThroughLayer().attach(a)
        assert top.extra(ta.StackAttribute.transport) == "tcp"
        assert await top.detach() is a
    u, v = await unix_pair(short_socket_dir / "s")
    async with u, v:
        assert u.label() == "unix"
        assert u.extra(ta.StackAttribute.transport) == "unix"
    p, q = ta.pipe_pair()
    async with p, q:
        assert p.label() == "pipe"
        assert p.extra(ta.StackAttribute.remote_address) is None
    m, n = ta.memory_pair()
    async with m, n:
        assert m.label() == "memory"
        assert repr(m) == "<StreamTransport memory>"
