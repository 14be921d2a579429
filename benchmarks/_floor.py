"""The C floor of bulk TLS in Python: OpenSSL and the socket alone, with no event loop.

Why this is measured: the bulk targets are ratios over trio.SSLStream, and both stacks (and any
other design built on Python's ``ssl``) do the same C work per byte: encrypt, decrypt, copy
into and out of the kernel. A loop that does *only* that work, in one thread, with no
scheduler, no task switch and no Python per record beyond the calls themselves, bounds what
any such design can reach. If the floor's rate over trio.SSLStream's is below a target, no
amount of work on our Python can meet that target on this machine.

Two floors, the same cipher and contexts as the contenders (``_contenders.contexts``):

* ``floor-bio``: ``ssl.SSLObject`` over two ``ssl.MemoryBIO`` (our design and trio's): the
  sender encrypts ``size`` bytes, takes the ciphertext out of the BIO and sends it; the receiver
  reads the socket into a 64 KiB buffer, writes it into the BIO and decrypts into its buffer.
* ``floor-sslsocket``: ``ssl.SSLSocket`` on non-blocking sockets, OpenSSL reading and writing
  the socket itself (no BIO copies, but without read-ahead two ``recv`` calls per record).

Each step sends ``min(size, 64 KiB)`` bytes, then receives them (one thread cannot send more
than the socket holds before reading it: a Unix socket holds about 208 KiB); ``select`` waits
only when the socket has nothing yet (loopback TCP delivers within the sender's system call,
almost always).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time

from _contenders import contexts

__all__ = ["FLOORS", "floor_seconds"]

FLOORS = ("floor-bio", "floor-sslsocket")
_SCRATCH = 64 * 1024


def _socket_pair(unix: bool) -> tuple[socket.socket, socket.socket]:
    if unix:
        return socket.socketpair(socket.AF_UNIX)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    for end in (client, server):
        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def _sslsocket_pair(unix: bool) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    server_ctx, client_ctx, _ = contexts()
    raw_client, raw_server = _socket_pair(unix)
    accepted: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: accepted.append(server_ctx.wrap_socket(raw_server, server_side=True))
    )
    thread.start()
    client = client_ctx.wrap_socket(raw_client, server_hostname="localhost")
    thread.join()
    server = accepted[0]
    server.sendall(b"x")  # the session tickets reach the client before timing starts
    assert client.recv(1) == b"x"
    client.setblocking(False)
    server.setblocking(False)
    return client, server


class _BioEnd:
    """One end of a TLS connection over a socket, through an SSLObject and two MemoryBIO."""

    def __init__(self, ctx: ssl.SSLContext, sock: socket.socket, server: bool) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server,
            server_hostname=None if server else "localhost",
        )  # fmt: skip
        self.sock = sock
        sock.setblocking(False)
        self.scratch = memoryview(bytearray(_SCRATCH))

    def flush(self) -> None:
        data = memoryview(self.outgoing.read())
        while data:
            try:
                data = data[self.sock.send(data) :]
            except BlockingIOError:
                select.select([], [self.sock], [])

    def pull(self) -> None:
        """Wait for ciphertext, then move what is there into the incoming BIO."""
        while True:
            try:
                n = self.sock.recv_into(self.scratch)
            except BlockingIOError:
                select.select([self.sock], [], [])
                continue
            if not n:
                raise EOFError
            self.incoming.write(self.scratch if n == _SCRATCH else self.scratch[:n])
            return


def _bio_pair(unix: bool) -> tuple[_BioEnd, _BioEnd]:
    server_ctx, client_ctx, _ = contexts()
    raw_client, raw_server = _socket_pair(unix)
    client = _BioEnd(client_ctx, raw_client, False)
    server = _BioEnd(server_ctx, raw_server, True)
    pending = [client, server]
    while pending:
        for end in list(pending):
            try:
                end.ssl.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
            end.flush()
        select.select([client.sock, server.sock], [], [], 0.01)
        for end in (client, server):
            with contextlib.suppress(BlockingIOError):
                end.incoming.write(end.sock.recv(_SCRATCH))
    server.ssl.write(b"x")  # the session tickets reach the client before timing starts
    server.flush()
    while True:
        try:
            assert client.ssl.read(1) == b"x"
            break
        except ssl.SSLWantReadError:
            client.pull()
    return client, server


def _run_bio(unix: bool, size: int, total: int) -> float:
    client, server = _bio_pair(unix)
    data = memoryview(os.urandom(size))
    view = memoryview(bytearray(size))
    write, read = client.ssl.write, server.ssl.read
    start = time.perf_counter()
    for _ in range(total // size):
        write(data)
        client.flush()
        got = 0
        while got < size:
            try:
                got += read(size - got, view[got:])
            except ssl.SSLWantReadError:
                server.pull()
    elapsed = time.perf_counter() - start
    client.sock.close()
    server.sock.close()
    return elapsed


def _run_sslsocket(unix: bool, size: int, total: int) -> float:
    client, server = _sslsocket_pair(unix)
    data = memoryview(os.urandom(size))
    view = memoryview(bytearray(size))
    start = time.perf_counter()
    for _ in range(total // size):
        sent = 0
        while sent < size:
            try:
                sent += client.send(data[sent:])
            except (BlockingIOError, ssl.SSLWantWriteError):
                select.select([], [client], [])
        got = 0
        while got < size:
            try:
                got += server.recv_into(view[got:])
            except ssl.SSLWantReadError:
                select.select([server], [], [])
    elapsed = time.perf_counter() - start
    client.close()
    server.close()
    return elapsed


def floor_seconds(name: str, unix: bool, size: int, total: int) -> float:
    """Seconds the floor ``name`` (one of :data:`FLOORS`) takes to move ``total`` bytes."""
    run = _run_bio if name == "floor-bio" else _run_sslsocket
    return run(unix, min(size, _SCRATCH), total)
