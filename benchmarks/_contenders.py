"""The contenders of the benchmark: our TLSStream, trio.SSLStream, asyncio (and uvloop).

Every contender uses the same certificate (one trustme CA and leaf per run, shared with child
processes through a directory) and, within a process, the same two ``ssl.SSLContext`` objects:
TLS 1.3 only, cipher suite pinned to ``TLS_AES_128_GCM_SHA256`` (see :func:`pin_cipher`).

Each trio contender wraps a connected socket stream as a TLS client or server and drains bytes
the way its users would: ``receive_into`` a reused buffer (ours), ``receive_some(size)`` (ours
in its ``-some`` variant, and trio.SSLStream). asyncio and uvloop use an ``asyncio.Protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import multiprocessing
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio
import trustme

import trio_tlsattach as ta

CIPHER = "TLS_AES_128_GCM_SHA256"
LIMIT = 120.0  # seconds: no single run may hang the report longer than this
Address = tuple[str, int] | str  # (host, port) for TCP, a path for a Unix socket


def _cert_dir() -> str:
    directory = os.environ.get("TLSATTACH_BENCH_CERTS")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="tlsattach-bench-")
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost")
        ca.cert_pem.write_to_path(os.path.join(directory, "ca.pem"))
        leaf.private_key_and_cert_chain_pem.write_to_path(os.path.join(directory, "leaf.pem"))
        # The same certificate and key as separate files, for libdill's file-path call.
        leaf.cert_chain_pems[0].write_to_path(os.path.join(directory, "cert.pem"))
        leaf.private_key_pem.write_to_path(os.path.join(directory, "key.pem"))
        os.environ["TLSATTACH_BENCH_CERTS"] = directory
    return directory


CERTS = _cert_dir()


# --- contexts and the pinned cipher -------------------------------------------------------------


def pin_cipher(ctx: ssl.SSLContext) -> bool:
    """Restrict ``ctx``'s TLS 1.3 suites to :data:`CIPHER`; False when that is not possible.

    Python's ``ssl`` has no ``set_ciphersuites`` (``set_ciphers`` only governs TLS <= 1.2), so
    this calls OpenSSL's ``SSL_CTX_set_ciphersuites`` through ctypes on the ``SSL_CTX *`` that
    CPython keeps right after the object header of an ``SSLContext``. The pointer is checked
    first: OpenSSL's ``SSL_CTX_get_options`` on it must equal ``ctx.options``.
    """
    if sys.implementation.name != "cpython":
        return False
    try:
        lib = ctypes.CDLL(f"libssl.so.{ssl.OPENSSL_VERSION_INFO[0]}")
    except OSError:
        return False
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    address = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not address or lib.SSL_CTX_get_options(address) != int(ctx.options):
        return False
    if lib.SSL_CTX_set_ciphersuites(address, CIPHER.encode()) != 1:
        return False
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"] == [CIPHER]


@functools.cache
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext, bool]:
    """(server context, client context, pinned): one pair per process, shared by all."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(os.path.join(CERTS, "leaf.pem"))
    client = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
    pinned = True
    for ctx in (server, client):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        pinned = pin_cipher(ctx) and pinned
    return server, client, pinned


# --- trio contenders ----------------------------------------------------------------------------


class Ours:
    """Our TLSStream. ``resume``: keep the client layer's session cache (off by default, so
    every handshake is a full one); ``some``: drain with ``receive_some`` not ``receive_into``;
    ``stack``: connect with our own ``open_tcp`` (``connect``), not ``trio.open_tcp_stream``."""

    def __init__(self, *, resume: bool = False, some: bool = False, stack: bool = False) -> None:
        self.stack = stack
        server_ctx, client_ctx, _ = contexts()
        self.server_layer = ta.TLSServerLayer(server_ctx)
        try:
            self.client_layer = ta.TLSClientLayer(
                client_ctx, server_hostname="localhost", session_cache=resume
            )
        except TypeError:  # a version from before the session cache (optimisation history)
            self.client_layer = ta.TLSClientLayer(client_ctx, server_hostname="localhost")
        self.some = some

    async def connect(self, address: Address) -> Any:
        if not self.stack:
            return await trio_connect(address)
        if isinstance(address, str):
            return await ta.open_unix(address)
        return await ta.open_tcp(*address)

    async def server(self, stream: trio.abc.Stream) -> Any:
        return await self.server_layer.attach(stream)

    async def client(self, stream: trio.abc.Stream) -> Any:
        return await self.client_layer.attach(stream)

    async def drain(self, tls: Any, total: int, size: int) -> None:
        got = 0
        if self.some:
            while got < total:
                data = await tls.receive_some(size)
                if not data:
                    raise EOFError
                got += len(data)
            return
        buf = bytearray(size)
        while got < total:
            n = await tls.receive_into(buf)
            if not n:
                raise EOFError
            got += n


class Trio:
    """trio.SSLStream, on the same context objects."""

    def __init__(self) -> None:
        self.sctx, self.cctx, _ = contexts()

    async def connect(self, address: Address) -> Any:
        return await trio_connect(address)

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


TRIO_CONTENDERS: dict[str, Callable[[], Any]] = {
    "ours": Ours,
    "ours-some": functools.partial(Ours, some=True),
    "ours-resume": functools.partial(Ours, resume=True),
    "ours-stack": functools.partial(Ours, resume=True, stack=True),
    "ours-stack-full": functools.partial(Ours, stack=True),
    "trio": Trio,
}


def asyncio_names() -> list[str]:
    names = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        names.append("uvloop")
    except ImportError:
        pass
    return names


def run_asyncio(name: str, coro: Any) -> Any:
    if name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# --- a sender in a child process ----------------------------------------------------------------


async def trio_connect(address: Address) -> trio.abc.Stream:
    if isinstance(address, str):
        return await trio.open_unix_socket(address)
    return await trio.open_tcp_stream(*address)


async def _trio_send(
    name: str, address: Address, total: int, size: int, report: Callable[[float], None]
) -> None:
    tls = await TRIO_CONTENDERS[name]().client(await trio_connect(address))
    data = b"x" * size
    cpu = time.process_time()
    for _ in range(total // size):
        await tls.send_all(data)
    report(time.process_time() - cpu)
    # Close only once the receiver has closed: closing a socket with unread bytes (the
    # server's session tickets) sends a RST, which can destroy data still in flight.
    with trio.move_on_after(LIMIT):
        try:
            while await tls.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        await tls.aclose()


def _ignore(cpu_seconds: float) -> None:
    pass


async def _asyncio_send(
    address: Address, total: int, size: int, report: Callable[[float], None] = _ignore
) -> None:
    _, client_ctx, _ = contexts()
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(
            address, ssl=client_ctx, server_hostname="localhost"
        )
    else:
        reader, writer = await asyncio.open_connection(
            *address, ssl=client_ctx, server_hostname="localhost"
        )
    data = b"x" * size
    cpu = time.process_time()
    for _ in range(total // size):
        writer.write(data)
        await writer.drain()
    report(time.process_time() - cpu)
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        while await asyncio.wait_for(reader.read(65536), LIMIT):  # until the receiver closes
            pass
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)


def sender_main(name: str, address: Address, total: int, size: int, cpu_to: Any) -> None:
    """A child process's life: connect, handshake, send ``total`` bytes, report the CPU seconds
    the sending took through ``cpu_to`` (a pipe's end), close."""
    if name in ("asyncio", "uvloop"):
        run_asyncio(name, _asyncio_send(address, total, size, cpu_to.send))
    else:
        trio.run(_trio_send, name, address, total, size, cpu_to.send)


class Sender:
    """A ``spawn``ed child sending ``total`` bytes to ``address`` with contender ``name``."""

    def __init__(self, name: str, address: Address, total: int, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._cpu, cpu_to = context.Pipe(duplex=False)
        self.process = context.Process(
            target=sender_main, args=(name, address, total, size, cpu_to), daemon=True
        )
        self.process.start()
        cpu_to.close()  # the child has its own copy

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def cpu_seconds(self) -> float:
        """The CPU time of the child's send loop (NaN if it did not finish), after ``join``."""
        return float(self._cpu.recv()) if self._cpu.poll() else float("nan")


# --- handshake clients in a child process -----------------------------------------------------


async def _trio_handshake_clients(address: Address, count: int) -> None:
    """``count`` trio.SSLStream clients one after the other: connect, handshake, 1 byte, close."""
    _, client_ctx, _ = contexts()
    for _ in range(count):
        tls = trio.SSLStream(await trio_connect(address), client_ctx, server_hostname="localhost")
        with contextlib.suppress(trio.BrokenResourceError):
            await tls.send_all(b"x")
        await tls.aclose()


def handshake_clients_main(address: Address, count: int) -> None:
    trio.run(_trio_handshake_clients, address, count)


class HandshakeClients:
    """A ``spawn``ed child making ``count`` TLS connections to ``address``, one at a time, with
    trio.SSLStream: the same client for every server contender."""

    def __init__(self, address: Address, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=handshake_clients_main, args=(address, count), daemon=True
        )
        self.process.start()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)


async def serve_handshake(name: str, raw: trio.SocketStream) -> Any:
    """The server end of one connection: ``"ours"`` through libdill's call with file paths
    (as the seed's users call it: a new memory block per connection, the certificate and key
    named by path), ``"trio"`` with trio.SSLStream on a context loaded once."""
    if name == "ours":
        cert, key = os.path.join(CERTS, "cert.pem"), os.path.join(CERTS, "key.pem")
        return await ta.tls_attach_server_mem(raw, cert, key, bytearray(ta.TLS_SIZE), ta.FOREVER)
    server_ctx, _, _ = contexts()
    tls = trio.SSLStream(raw, server_ctx, server_side=True)
    await tls.do_handshake()
    return tls


class CpuClock:
    """``with clock:`` adds the CPU seconds this process spends in the block to ``seconds``.
    The interface of the allocation counter, so the receive loops take either."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> CpuClock:
        self._start = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds += time.process_time() - self._start


# --- asyncio / uvloop ---------------------------------------------------------------------------


class _Sink(asyncio.Protocol):
    """Counts bytes; times from the handshake's end (connection_made) to the last byte."""

    def __init__(self, total: int, done: asyncio.Future[float], counter: Any) -> None:
        self.total, self.done, self.counter = total, done, counter
        self.received = 0
        self.start = 0.0
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.start = time.perf_counter()
        if self.counter is not None:
            self.counter.__enter__()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.total and not self.done.done():
            if self.counter is not None:
                self.counter.__exit__(None, None, None)
            self.done.set_result(time.perf_counter() - self.start)


async def _asyncio_server(
    total: int, done: asyncio.Future[float], counter: Any, unix_path: str | None
) -> tuple[Any, Address, list[_Sink]]:
    """A TLS server whose connections are :class:`_Sink` s (listed in the third item)."""
    loop = asyncio.get_running_loop()
    server_ctx, _, _ = contexts()
    sinks: list[_Sink] = []

    def sink() -> _Sink:
        sinks.append(_Sink(total, done, counter))
        return sinks[-1]

    if unix_path:
        server = await loop.create_unix_server(sink, unix_path, ssl=server_ctx)
        return server, unix_path, sinks
    server = await loop.create_server(sink, "127.0.0.1", 0, ssl=server_ctx)
    return server, ("127.0.0.1", server.sockets[0].getsockname()[1]), sinks


async def asyncio_bulk(total: int, size: int, unix_path: str | None = None) -> float:
    """Seconds for asyncio to move ``total`` bytes over TLS in one process."""
    total = total // size * size
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    server, address, sinks = await _asyncio_server(total, done, None, unix_path)
    sender = loop.create_task(_asyncio_send(address, total, size))
    elapsed = await asyncio.wait_for(done, LIMIT)
    sinks[0].transport.close()  # type: ignore[union-attr]
    await sender
    server.close()
    return elapsed


async def asyncio_receive_from_child(
    name: str, total: int, size: int, unix_path: str | None, counter: Any = None
) -> tuple[float, float]:
    """Seconds for an asyncio receiver to take ``total`` bytes from a sender in a child, and
    the CPU seconds of the child's sending."""
    total = total // size * size
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    server, address, sinks = await _asyncio_server(total, done, counter, unix_path)
    child = Sender(name, address, total, size)
    try:
        elapsed = await asyncio.wait_for(done, LIMIT)
        sinks[0].transport.close()  # type: ignore[union-attr]
    finally:
        server.close()
        await loop.run_in_executor(None, child.join, 30)
    return elapsed, child.cpu_seconds()


async def asyncio_handshakes(seconds: float) -> tuple[float, float]:
    """Sequential handshakes on new TCP connections: (per second, CPU us per handshake)."""
    loop = asyncio.get_running_loop()
    server_ctx, client_ctx, _ = contexts()
    accepted: list[asyncio.Future[asyncio.BaseTransport]] = []

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted[-1].set_result(transport)  # called once the server's handshake is done

    server = await loop.create_server(Accept, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    count = 0
    cpu, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        accepted.append(loop.create_future())
        client, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        served = await asyncio.wait_for(accepted[-1], LIMIT)
        accepted.clear()
        client.close()
        served.close()
        count += 1
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
    server.close()
    return count / elapsed, cpu / count * 1e6


async def asyncio_cipher() -> str:
    loop = asyncio.get_running_loop()
    _, client_ctx, _ = contexts()
    done: asyncio.Future[float] = loop.create_future()
    server, address, _ = await _asyncio_server(1, done, None, None)
    transport, _ = await loop.create_connection(
        asyncio.Protocol, *address, ssl=client_ctx, server_hostname="localhost"
    )
    name, version, _ = transport.get_extra_info("cipher")
    transport.close()
    server.close()
    return f"{version} {name}"
