"""The TLS receive path's record tracking: records cut anywhere by the stream below.

The receive side counts whole records from their headers (``TLSStream._feed``) to decide when
to call OpenSSL and whether a timeout fell mid-record. These tests cut the ciphertext at every
offset, including inside the 5-byte headers, and mix record sizes.
"""

import errno
import random
import ssl

import pytest
import trio
import trio.testing
import trustme
from _tls_helpers import seal
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_tlsattach as ta
from trio_tlsattach._tlswire import SCRATCH_SIZE, TLSWire, _new_scratch
from trio_tlsattach.testing import tls_pair


class Trickle(trio.abc.HalfCloseableStream):
    """A memory stream whose receives return at most ``sizes()`` bytes each: chosen cuts."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, sizes: random.Random | int) -> None:
        self.inner = inner
        self.sizes = sizes

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        cap = self.sizes if isinstance(self.sizes, int) else self.sizes.randint(1, 40_000)
        return await self.inner.receive_some(min(max_bytes or cap, cap))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _trickled_pair(
    ca: trustme.CA, cert: trustme.LeafCert, sizes: random.Random | int
) -> tuple[ta.TLSStream, ta.TLSStream]:
    a, b = trio.testing.memory_stream_pair()
    return await tls_pair(a, Trickle(b, sizes), ca, cert)


async def _send_and_check(
    sender: ta.TLSStream, receiver: ta.TLSStream, writes: list[bytes], read_sizes: random.Random
) -> None:
    expected = b"".join(writes)

    async def send() -> None:
        for block in writes:
            await sender.send_all(block)

    got = bytearray()
    with trio.fail_after(60):  # a miscounted record shows as a hang
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while len(got) < len(expected):
                buf = bytearray(read_sizes.randint(1, 70_000))
                n = await receiver.receive_into(buf)
                assert n > 0
                got += buf[:n]
    assert got == expected


async def test_one_byte_at_a_time_cuts_every_header_everywhere(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await _trickled_pair(tls_ca, tls_server_cert, 1)
    writes = [b"a", b"bc" * 150, b"d" * 700, b"", b"e" * 5, b"f" * 1200]
    async with client, server:
        await _send_and_check(client, server, writes, random.Random(1))


@pytest.mark.parametrize("seed", range(4))
async def test_random_cuts_random_records_random_reads(
    seed: int, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    rnd = random.Random(seed)
    client, server = await _trickled_pair(tls_ca, tls_server_cert, random.Random(seed + 100))
    # Record sizes from 1 byte to several full records per write.
    writes = [rnd.randbytes(rnd.choice([1, 2, 5, 17, 300, 16_383, 16_384, 16_385, 50_000]))
              for _ in range(60)]  # fmt: skip
    async with client, server:
        await _send_and_check(client, server, writes, rnd)


async def test_session_tickets_between_records_cut_anywhere(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The client's receive meets records without application data (TLS 1.3 tickets) first:
    the whole-record count is then too high, which must cost no byte and no hang."""
    a, b = trio.testing.memory_stream_pair()
    client, server = await tls_pair(Trickle(a, 3), b, tls_ca, tls_server_cert)
    async with client, server:
        rnd = random.Random(9)
        writes = [rnd.randbytes(rnd.randint(1, 3000)) for _ in range(20)]
        await _send_and_check(server, client, writes, rnd)


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 1020])
async def test_timeout_mid_record_at_every_cut_breaks_receiving(
    cut: int,
    autojump_clock: trio.testing.MockClock,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    record = seal(client, b"y" * 1000)
    assert len(record) > cut
    await a._send_all(record[:cut], ta.FOREVER)
    with pytest.raises(ta.DeadlineExceeded):
        await server.receive_some(10, ta.after(1))
    with pytest.raises(ta.ConnectionBroken) as info:
        await server.receive_some(10)
    assert info.value.errno == errno.ECONNRESET
    await client.aclose()
    await server.aclose()


async def test_timeout_after_whole_records_keeps_receiving(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Records taken in one byte at a time, then a timeout: nothing is mid-record."""
    client, server = await _trickled_pair(tls_ca, tls_server_cert, 1)
    async with client, server:
        await client.send_all(b"one")
        await client.send_all(b"two")
        got = bytearray()
        while len(got) < 6:
            got += await server.receive_some(10)
        assert got == b"onetwo"
        with pytest.raises(ta.DeadlineExceeded):
            await server.receive_some(10, ta.after(1))
        await client.send_all(b"three")
        assert await server.receive_some(10) == b"three"


async def test_reads_that_fill_the_scratch_buffer_with_records_of_every_length(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Everything is sent before the receiver starts, so the stream below hands over full
    64 KiB reads (``_feed``'s unsliced path) in which records of many lengths are cut."""
    full_reads = 0

    class Counting(Trickle):
        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            nonlocal full_reads
            data = await super().receive_some(max_bytes)
            full_reads += len(data) == SCRATCH_SIZE
            return data

    a, b = trio.testing.memory_stream_pair()
    client, server = await tls_pair(a, Counting(b, SCRATCH_SIZE), tls_ca, tls_server_cert)
    rnd = random.Random(5)
    writes = [rnd.randbytes(rnd.randint(1, 17_000)) for _ in range(150)]
    async with client, server:
        for block in writes:
            await client.send_all(block)
        expected = b"".join(writes)
        got = bytearray()
        while len(got) < len(expected):
            buf = bytearray(rnd.randint(1, 70_000))
            got += buf[: await server.receive_into(buf)]
        assert got == expected
    assert full_reads >= len(expected) // SCRATCH_SIZE - 1


@pytest.mark.parametrize("cut", [1, 2, 4, 5, 70_000])
async def test_header_longer_than_tls_allows_fails_at_once(
    cut: int,
    autojump_clock: trio.testing.MockClock,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    """A record header claiming 65535 bytes is OpenSSL's error to report now (record_overflow),
    not a reason to wait for bytes a broken peer will never send: at every cut of the header."""
    a, b = trio.testing.memory_stream_pair()
    client, server = await tls_pair(a, Trickle(b, cut), tls_ca, tls_server_cert)
    async with client, server:
        await client.send_all(b"before")
        assert await server.receive_some(100) == b"before"
        await a.send_all(b"\x17\x03\x03\xff\xff" + b"x" * 100)
        with pytest.raises(ta.TLSError) as info:
            await server.receive_some(100, ta.after(10))
        assert info.value.errno == errno.EPROTO


# --- the header walk alone, against a reference -------------------------------------------------


class _Walker(TLSWire):
    """TLSWire's record walk and nothing else: no stream below, no OpenSSL reads."""

    # The stream's own methods are never called here.
    _receive_into = _receive_some = _send_all = _send_eof = None  # type: ignore[assignment]
    _wait_send_all_might_not_block = _detach_protocol = label = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self._incoming = ssl.MemoryBIO()


def _too_long(length: int) -> bool:
    """More than TLS allows in a record (2^14 + 2048): such a record counts as whole as soon as
    its header is in, so that OpenSSL refuses it at once."""
    return length > 0x48FF


_LENGTHS = st.one_of(
    st.integers(0, 300),
    st.sampled_from([16_384, 16_401, 16_406, 0x48FF, 0x4900, 0xFFFF]),
    st.integers(0, 0xFFFF),
)


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(_LENGTHS, min_size=1, max_size=12), data=st.data())
def test_header_walk_counts_whole_records_at_any_cut(
    lengths: list[int], data: st.DataObject
) -> None:
    """Any record lengths, legal or not, cut into reads of any size up to a full scratch buffer
    (whose unsliced path is taken at exactly 64 KiB): after every read the walk's count of whole
    records and its mid-record flag are what a plain parse of the same bytes says. The count is
    an upper bound by design: a record too long for TLS counts once when its header is in and
    the record is not, and again if it ever ends."""
    stream, headers, ends = bytearray(), [], []
    for length in lengths:
        headers.append(len(stream) + 5)
        stream += bytes([0x17, 3, 3, length >> 8, length & 0xFF]) + b"\xee" * length
        ends.append(len(stream))
    walker, scratch = _Walker(), _new_scratch()
    fed, early = 0, 0  # early: too-long records counted when their header came in
    while fed < len(stream):
        count = data.draw(st.sampled_from([SCRATCH_SIZE, 1, 4, 5]) | st.integers(1, SCRATCH_SIZE))
        count = min(count, len(stream) - fed)
        scratch[0][:count] = stream[fed : fed + count]
        walker._feed(count, *scratch)
        fed, before = fed + count, fed
        early += sum(
            _too_long(length) and before < header <= fed < end
            for length, header, end in zip(lengths, headers, ends, strict=True)
        )
        assert walker._records == sum(end <= fed for end in ends) + early
        assert walker._mid_record() == (fed not in ends)
