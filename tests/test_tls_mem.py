"""tls_attach_server_mem and friends: the caller's memory block, pools, and certificate forms."""

import errno
import mmap
import os
import ssl
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._tls import PLAIN_LENT, _spare_plain
from trio_tlsattach._tlsconfig import CertSource
from trio_tlsattach.testing import attach_both, tls_pair

KeySource = str | bytes | os.PathLike[str] | None
"""What tls_attach_server_mem and TLSServerLayer take as ``key``."""


async def _pair_with_mem(
    mem: object, ca: trustme.CA, cert: CertSource, key: KeySource = None
) -> tuple[ta.TLSStream, ta.TLSStream]:
    return await attach_both(
        *ta.socketpair(),
        lambda s: ta.tls_attach_client(s, context=ca, server_hostname="localhost"),
        lambda s: ta.tls_attach_server_mem(s, cert, key, mem),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: bytearray(ta.TLS_SIZE),
        lambda: mmap.mmap(-1, ta.TLS_SIZE),
        lambda: memoryview(bytearray(ta.TLS_SIZE * 2))[ta.TLS_SIZE :],
        lambda: ta.StateBlockPool(2).acquire().view,  # a pool block's memory, as a buffer
    ],
    ids=["bytearray", "mmap", "memoryview-slice", "pool-view"],
)
async def test_good_blocks(
    make: Callable[[], Any], tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    mem = make()
    client, server = await _pair_with_mem(mem, tls_ca, tls_server_cert)
    await client.send_all(b"in your memory")
    assert await server.receive_some(100) == b"in your memory"
    # The state record at the front of the block: phase, flags, layer id...
    phase, flags, layer, *_ = struct.unpack_from("<BBHIQQd", memoryview(mem))
    assert (phase, layer) == (0, 1)
    assert flags & 1  # handshake done
    await client.aclose()
    await server.aclose()


async def test_block_released_after_close_and_detach(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    mem = bytearray(ta.TLS_SIZE)
    client, server = await _pair_with_mem(mem, tls_ca, tls_server_cert)
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument, match="live layer"):  # in use by a live connection
        await ta.tls_attach_server_mem(b, tls_server_cert, None, mem)
    assert b.closed
    await a.aclose()
    await server.aclose()
    await client.aclose()
    mem.extend(b"x")  # released: the owner may resize it
    del mem[-1:]
    client, server = await _pair_with_mem(mem, tls_ca, tls_server_cert)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.detach)
        raw = await server.detach()
    mem.extend(b"x")
    await raw.aclose()
    assert client.below is not None
    await client.below.aclose()


@pytest.mark.parametrize(
    "bad",
    [bytearray(ta.TLS_SIZE - 1), b"\0" * ta.TLS_SIZE, memoryview(bytearray(ta.TLS_SIZE * 2))[::2]],
)
async def test_bad_blocks_are_einval_and_close(
    bad: object, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument) as info:
        await ta.tls_attach_server_mem(b, tls_server_cert, None, bad)
    assert info.value.errno == errno.EINVAL
    assert b.closed
    await a.aclose()


async def test_pool_bounds_connections(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(1)
    layer = ta.TLSServerLayer(tls_server_cert, pool=pool)
    client_layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost")
    client, server = await attach_both(*ta.socketpair(), client_layer.attach, layer.attach)
    assert pool.available == 0
    a, b = ta.socketpair()
    with pytest.raises(ta.OutOfStateBlocks) as info:
        await layer.attach(b)
    assert info.value.errno == errno.ENOMEM
    assert b.closed
    await a.aclose()
    await server.aclose()
    assert pool.available == 1
    await client.aclose()


async def test_client_mem_variant(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    mem = bytearray(ta.TLS_SIZE)
    client, server = await attach_both(
        *ta.socketpair(),
        lambda s: ta.tls_attach_client_mem(s, mem, context=tls_ca, server_hostname="localhost"),
        lambda s: ta.tls_attach_server(s, tls_server_cert, None),
    )
    await server.send_all(b"ok")
    assert await client.receive_some(10) == b"ok"
    await client.aclose()
    await server.aclose()


async def test_certificate_forms(
    tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    both_path = tmp_path / "both.pem"
    tls_server_cert.cert_chain_pems[0].write_to_path(str(cert_path))
    tls_server_cert.private_key_pem.write_to_path(str(key_path))
    tls_server_cert.private_key_and_cert_chain_pem.write_to_path(str(both_path))
    forms: list[tuple[CertSource, KeySource]] = [
        (str(cert_path), str(key_path)),  # libdill: certificate file, key file
        (both_path, None),  # one file holding both, as a Path
        (tls_server_cert.cert_chain_pems[0].bytes(), tls_server_cert.private_key_pem.bytes()),
        (tls_server_cert, None),
    ]
    for cert, key in forms:
        client, server = await _pair_with_mem(bytearray(ta.TLS_SIZE), tls_ca, cert, key)
        assert server.tls_version == "TLSv1.3"
        await client.aclose()
        await server.aclose()
    # Contexts made from files are cached: loading a chain per connection is slow.
    assert ta.TLSServerLayer(str(cert_path), str(key_path)).context is (
        ta.TLSServerLayer(str(cert_path), str(key_path)).context
    )


async def test_default_context_is_secure(tls_server_cert: trustme.LeafCert) -> None:
    layer = ta.TLSServerLayer(tls_server_cert)
    assert layer.context.minimum_version >= __import__("ssl").TLSVersion.TLSv1_2
    client_layer = ta.TLSClientLayer(server_hostname="localhost")
    assert client_layer.context.check_hostname
    assert client_layer.context.verify_mode == __import__("ssl").CERT_REQUIRED


async def test_owner_can_release_mmap_and_views_after_close_and_detach(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """No export of the caller's buffer survives the layer: mmap.close() and
    memoryview.release() would raise BufferError otherwise."""
    mm = mmap.mmap(-1, ta.TLS_SIZE)
    client, server = await _pair_with_mem(mm, tls_ca, tls_server_cert)
    await client.aclose()
    await server.aclose()
    mm.close()

    arena = bytearray(ta.TLS_SIZE * 2)
    whole = memoryview(arena)
    part = whole[ta.TLS_SIZE :]
    client, server = await _pair_with_mem(part, tls_ca, tls_server_cert)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.detach)
        raw = await server.detach()
    part.release()
    whole.release()
    arena.extend(b"resizable again")
    await raw.aclose()
    assert client.below is not None
    await client.below.aclose()


async def test_pool_block_as_mem_returns_to_the_pool(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(2)
    block = pool.acquire()
    assert pool.in_use == 1
    client, server = await _pair_with_mem(block, tls_ca, tls_server_cert)
    # The lease is claimed by a live connection: a second attach with it is EINVAL.
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument) as info:
        await ta.tls_attach_server_mem(b, tls_server_cert, None, block)
    assert info.value.errno == errno.EINVAL
    assert b.closed
    await a.aclose()
    async with trio.open_nursery() as nursery:  # detach, not close: still released
        nursery.start_soon(client.detach)
        raw = await server.detach()
    assert block.released
    assert pool.in_use == 0
    with pytest.raises(ta.InvalidArgument):  # a released lease cannot be used again
        await ta.tls_attach_server_mem(raw, tls_server_cert, None, block)
    assert raw.closed
    assert client.below is not None
    await client.below.aclose()


async def test_layer_pool_block_released_after_detach(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(1)
    layer = ta.TLSServerLayer(tls_server_cert, pool=pool)
    client_layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost")
    for _ in range(3):  # one block serves connection after connection
        client, server = await attach_both(*ta.socketpair(), client_layer.attach, layer.attach)
        assert pool.available == 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.detach)
            raw = await server.detach()
        assert pool.available == 1
        await raw.aclose()
        assert client.below is not None
        await client.below.aclose()
    with pytest.raises(ta.InvalidArgument):
        ta.TLSServerLayer(tls_server_cert, mem=bytearray(ta.TLS_SIZE), pool=pool)


async def test_ssl_context_as_certificate(
    tls_ca: trustme.CA, server_ssl_context: ssl.SSLContext
) -> None:
    client, server = await _pair_with_mem(bytearray(ta.TLS_SIZE), tls_ca, server_ssl_context)
    assert server.context is server_ssl_context
    assert server.server_hostname == "localhost"  # SNI recorded on the caller's context too
    await client.aclose()
    await server.aclose()


def _encrypted_key(leaf: trustme.LeafCert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def test_bad_certificate_files_are_einval(
    tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    cert_path = tmp_path / "cert.pem"
    tls_server_cert.cert_chain_pems[0].write_to_path(str(cert_path))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    other_key = tmp_path / "other-key.pem"
    tls_ca.issue_cert("other.example").private_key_pem.write_to_path(str(other_key))
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(_encrypted_key(tls_server_cert))
    cases: list[tuple[CertSource, KeySource]] = [
        (garbage, None),  # not PEM at all
        (cert_path, None),  # a certificate without its key
        (cert_path, garbage),
        (cert_path, other_key),  # the key of another certificate
        (tmp_path, None),  # a directory
        (tmp_path / "missing.pem", None),
        (cert_path, tmp_path / "missing-key.pem"),
        # An encrypted key: EINVAL at once, never a pass-phrase prompt on the terminal.
        (cert_path, encrypted),
        (tls_server_cert.cert_chain_pems[0].bytes(), _encrypted_key(tls_server_cert)),
    ]
    for cert, key in cases:
        with pytest.raises(ta.InvalidArgument) as info:
            ta.TLSServerLayer(cert, key)
        assert info.value.errno == errno.EINVAL, (cert, key)
    with pytest.raises(ta.InvalidArgument, match="encrypted"):
        ta.TLSServerLayer(cert_path, encrypted)


async def test_bad_certificate_through_the_facade_closes_the_stream(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument):
        await ta.tls_attach_server_mem(b, str(garbage), None, bytearray(ta.TLS_SIZE))
    assert b.closed
    await a.aclose()


async def test_receivers_waiting_at_once_hold_no_lent_buffer(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """``receive_some`` borrows its plaintext buffer only while it decrypts, never across a
    wait: fifty idle connections waiting in it hold none, and the free list stays as long
    as the deepest nesting (one here)."""
    count = 50
    streams = [await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert) for _ in range(count)]
    got: list[bytes] = []

    async def wait_for_data(server: ta.TLSStream) -> None:
        got.append(await server.receive_some(PLAIN_LENT))

    async with trio.open_nursery() as nursery:
        for _, server in streams:
            nursery.start_soon(wait_for_data, server)
        await trio.testing.wait_all_tasks_blocked()
        assert len(_spare_plain) <= 1
        for client, _ in streams:
            await client.send_all(b"x" * 100_000)
    assert len(_spare_plain) <= 1
    assert all(0 < len(data) <= 100_000 for data in got)
    assert len(got) == count
    for client, server in streams:
        await client.aclose()
        await server.aclose()


@pytest.mark.parametrize("transport", ["socketpair", "memory"])
async def test_a_connection_idle_after_a_request_holds_no_buffer(
    transport: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Receive buffers are lent or dropped after a short read: idle costs no 64 KiB each."""
    count = 20
    pairs = [ta.socketpair() if transport == "socketpair" else ta.memory_pair()
             for _ in range(count)]  # fmt: skip
    streams = [await tls_pair(a, b, tls_ca, tls_server_cert) for a, b in pairs]

    async def request(client: ta.TLSStream, server: ta.TLSStream) -> None:
        await client.send_all(b"GET / HTTP/1.0\r\n\r\n")
        assert await server.receive_some() == b"GET / HTTP/1.0\r\n\r\n"
        await server.send_all(b"ok")
        assert await client.receive_some() == b"ok"

    await request(*streams[0])  # the process's lent buffers exist from here on
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for client, server in streams[1:]:
            await request(client, server)
        per_connection = (tracemalloc.get_traced_memory()[0] - before) / (count - 1)
    finally:
        tracemalloc.stop()
    assert per_connection < 8192
    for client, server in streams:
        await client.aclose()
        await server.aclose()
