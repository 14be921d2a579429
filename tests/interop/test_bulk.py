"""Many records with real peers: bulk data both ways with socat's OpenSSL client, and records of
every size the fast path must count (a peer limited to 512-byte records, both ways).

The fast path decrypts every whole record buffered and counts records itself (``_tlswire``); a
peer that cuts its data differently from us (socat's 8 KiB writes, OpenSSL's
``-max_send_frag``, the max_fragment_length extension) exercises that counting across reads.
Contents are checked byte for byte, reads use random sizes.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, VERSION_FLAGS, Certs, Tools, need, s_client, tcp_listener

pytestmark = pytest.mark.interop

SIZE = 4 * 1024 * 1024
"""Bytes per bulk transfer: 256 full records."""

DIGITS = bytes(ord("0") + i % 10 for i in range(256))
"""``bytes.translate`` table: random bytes to random ASCII digits."""


async def read_to_eof(tls: ta.TLSStream, rng: random.Random) -> bytes:
    """Everything until the peer's close_notify, in reads of random sizes."""
    got = bytearray()
    buffer = bytearray(70000)
    while True:
        n = await tls.receive_into(memoryview(buffer)[: rng.randint(1, len(buffer))])
        if not n:
            return bytes(got)
        got += buffer[:n]


async def accept_tls(listener: trio.SocketListener, certs: Certs) -> ta.TLSStream:
    return await ta.TLSServerLayer(certs.leaf).attach(
        await listener.accept(), ta.after(TOOL_TIMEOUT)
    )


def socat_client(socat: str, port: int, certs: Certs, version: str) -> str:
    """socat's OpenSSL client address for our server, verifying its certificate."""
    return (
        f"OPENSSL:127.0.0.1:{port},cafile={certs.ca_path},commonname=localhost,"
        f"snihost=localhost,min-version=TLS{version},max-version=TLS{version}"
    )


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_bulk_to_socat(version: str, certs: Certs, tools: Tools, tmp_path: Path) -> None:
    """We send 4 MiB in writes of random sizes; socat writes what it decrypts to a file."""
    socat = need("socat")
    rng = random.Random(version)
    data = os.urandom(SIZE)
    out = tmp_path / "out.bin"
    listener, port = await tcp_listener()
    tool = await tools.start(
        [socat, "-u", socat_client(socat, port, certs, version), f"CREATE:{out}"]
    )
    async with await accept_tls(listener, certs) as tls:
        assert tls.tls_version == f"TLSv{version}"
        sent = 0
        while sent < SIZE:
            step = rng.randint(1, 300_000)
            await tls.send_all(data[sent : sent + step], ta.after(TOOL_TIMEOUT))
            sent += step
    # aclose sent close_notify: socat ends at it, having written everything.
    assert await tool.wait() == 0, tool.text()
    await listener.aclose()
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_bulk_from_socat(version: str, certs: Certs, tools: Tools, tmp_path: Path) -> None:
    """socat sends a 4 MiB file and close_notify; we read to the end in random sizes."""
    socat = need("socat")
    data = os.urandom(SIZE)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    listener, port = await tcp_listener()
    tool = await tools.start(
        [socat, "-u", f"OPEN:{source}", socat_client(socat, port, certs, version)]
    )
    async with await accept_tls(listener, certs) as tls:
        with trio.fail_after(TOOL_TIMEOUT):
            got = await read_to_eof(tls, random.Random(version))
    assert await tool.wait() == 0, tool.text()
    await listener.aclose()
    assert len(got) == SIZE
    assert got == data


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_small_records_from_s_server(version: str, certs: Certs, tools: Tools) -> None:
    """s_server cuts what it sends into 512-byte records: 2000+ records per MB to count.

    What s_server sends is what it reads from its standard input; digits only, since it takes
    a read that starts with a letter (``Q``, ``k``, ...) as a command."""
    openssl = need("openssl")
    server = await tools.start(
        [
            openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
            "-cert", str(certs.cert_path), "-key", str(certs.key_path), VERSION_FLAGS[version],
            "-max_send_frag", "512",
        ],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    ready = await server.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, server.text()
    data = os.urandom(1024 * 1024).translate(DIGITS)
    rng = random.Random(version)
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", int(ready.group(1)))
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost")
        async with await layer.attach(raw) as tls:
            assert server.process.stdin is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.process.stdin.send_all, data)
                got = bytearray()
                while len(got) < len(data):
                    chunk = await tls.receive_some(rng.randint(1, 70000))
                    assert chunk, f"end of stream after {len(got)} bytes"
                    got += chunk
    assert got == data


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_max_fragment_length_to_s_client(version: str, certs: Certs, tools: Tools) -> None:
    """s_client asks for 512-byte records (RFC 6066 max_fragment_length); our sends obey, or
    s_client would fail on a record_overflow."""
    need("openssl")
    listener, port = await tcp_listener()
    data = os.urandom(256 * 1024).hex().encode()  # text: s_client prints it as it comes
    tool = await tools.start(
        s_client(port, certs, VERSION_FLAGS[version], "-maxfraglen", "512", "-tlsextdebug"),
        stdin=subprocess.PIPE,
    )
    async with await accept_tls(listener, certs) as tls:
        await tls.send_all(data + b"\nend of data\n", ta.after(TOOL_TIMEOUT))
        assert await tool.expect(rb"end of data"), tool.text()[-2000:]
    await listener.aclose()
    assert b'TLS server extension "max fragment length"' in tool.output, tool.text()[:4000]
    assert data in tool.output
