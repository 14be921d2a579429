"""The contenders of the benchmark: our TLSStream, trio.SSLStream, asyncio (and uvloop).

Each trio contender knows how to wrap a connected socket stream as a TLS client or server and
how to drain bytes from it the way its users would: ``receive_into`` a reused buffer for ours,
``receive_some`` for trio.SSLStream.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from typing import Any

import trio
import trustme

import trio_tlsattach as ta


def _cert_dir() -> str:
    """One CA and leaf for the whole run, shared with child processes through a directory."""
    directory = os.environ.get("TLSATTACH_BENCH_CERTS")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="tlsattach-bench-")
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost")
        ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
        leaf.private_key_and_cert_chain_pem.write_to_path(os.path.join(directory, "leaf.pem"))
        os.environ["TLSATTACH_BENCH_CERTS"] = directory
    return directory


CERTS = _cert_dir()


def server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(CERTS, "leaf.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Ours:
    name = "ours"

    def __init__(self) -> None:
        self.server_layer = ta.TLSServerLayer(server_context())
        self.client_layer = ta.TLSClientLayer(client_context(), server_hostname="localhost")

    async def server(self, stream: trio.abc.Stream) -> Any:
        return await self.server_layer.attach(stream)

    async def client(self, stream: trio.abc.Stream) -> Any:
        return await self.client_layer.attach(stream)

    async def drain(self, tls: Any, total: int, size: int) -> None:
        buf = bytearray(size)
        got = 0
        while got < total:
            n = await tls.receive_into(buf)
            if not n:
                raise EOFError
            got += n


class OursFresh(Ours):
    """Ours without the client session cache: every handshake is a full one."""

    name = "ours-full"

    def __init__(self) -> None:
        super().__init__()
        self.client_layer = ta.TLSClientLayer(
            client_context(), server_hostname="localhost", session_cache=False
        )


class Trio:
    name = "trio.SSLStream"

    def __init__(self) -> None:
        self.sctx = server_context()
        self.cctx = client_context()

    async def server(self, stream: trio.abc.Stream) -> Any:
        tls = trio.SSLStream(stream, self.sctx, server_side=True)
        await tls.do_handshake()
        return tls

    async def client(self, stream: trio.abc.Stream) -> Any:
        tls = trio.SSLStream(stream, self.cctx, server_hostname="localhost")
        await tls.do_handshake()
        return tls

    async def drain(self, tls: Any, total: int, size: int) -> None:
        got = 0
        while got < total:
            data = await tls.receive_some(size)
            if not data:
                raise EOFError
            got += len(data)


TRIO_CONTENDERS = {"ours": Ours, "trio": Trio}


async def asyncio_bulk(total: int, size: int, unix_path: str | None = None) -> float:
    """Seconds for asyncio to move ``total`` bytes over TLS in one process (Protocol receiver)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    received = 0

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received >= total and not done.done():
                done.set_result(None)

    if unix_path:
        server = await loop.create_unix_server(Sink, unix_path, ssl=server_context())
        _, writer = await asyncio.open_unix_connection(
            unix_path, ssl=client_context(), server_hostname="localhost"
        )
    else:
        server = await loop.create_server(Sink, "127.0.0.1", 0, ssl=server_context())
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
        )
    chunk = b"x" * size
    start = loop.time()
    for _ in range(total // size):
        writer.write(chunk)
        await writer.drain()
    await done
    elapsed = loop.time() - start
    writer.close()
    server.close()
    return elapsed
