"""Opening transports: connecting over TCP and Unix sockets, and connected pairs.

The transports themselves are in ``_transports``; this module only makes them. ``open_tcp``
connects to an IP address directly (no resolver, no task per attempt: several hundred
microseconds less per connection than ``trio.open_tcp_stream``) and hands a name to Trio's
happy eyeballs.
"""

from __future__ import annotations

import errno
import os
import socket

import trio

from ._deadline import FOREVER, check_deadline, waiting
from ._transports import PipeTransport, SocketTransport, StreamTransport, wrap_stream

__all__ = ["memory_pair", "open_pipe", "open_tcp", "open_unix", "pipe_pair", "socketpair"]


async def open_tcp(host: str | bytes, port: int, *, deadline: float = FOREVER) -> SocketTransport:
    """Connect to ``host:port`` over TCP.

    A name is resolved and tried address by address with happy eyeballs, as
    :func:`trio.open_tcp_stream` does. An IP address is connected to directly: no resolver, no
    task per attempt, which makes a new connection several hundred microseconds cheaper.
    """
    checked = check_deadline(deadline)
    literal = _ip_literal(host)
    if literal is None:
        with waiting(checked, "connect"):
            stream = await trio.open_tcp_stream(host, port)
        transport = wrap_stream(stream)
        assert isinstance(transport, SocketTransport)
        return transport
    family, address = literal
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex((address, port))
        if error == errno.EINPROGRESS:
            with waiting(checked, "connect"):
                await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        elif not error:
            await trio.lowlevel.checkpoint()
        if error:
            raise OSError(error, f"connect to {address} port {port}: {os.strerror(error)}")
    except BaseException:
        sock.close()
        raise
    return SocketTransport(sock)


def _ip_literal(host: str | bytes) -> tuple[socket.AddressFamily, str] | None:
    """``host``'s family and text when it is an IP address; None for a name (or not text)."""
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)  # strict: "127.1" or "::1%lo" go the slow way
        except OSError:
            continue
        return family, host
    return None


async def open_unix(
    path: str | bytes | os.PathLike[str], *, deadline: float = FOREVER
) -> SocketTransport:
    """Connect to the Unix-domain stream socket at ``path``."""
    with waiting(check_deadline(deadline), "connect"):
        stream = await trio.open_unix_socket(os.fspath(path))
    transport = wrap_stream(stream)
    assert isinstance(transport, SocketTransport)
    return transport


def socketpair() -> tuple[SocketTransport, SocketTransport]:
    """Two connected Unix-socket transports."""
    a, b = socket.socketpair()
    return SocketTransport(a), SocketTransport(b)


def open_pipe(read_fd: int, write_fd: int, *, close_fds: bool = True) -> PipeTransport:
    """A transport reading ``read_fd`` and writing ``write_fd`` (e.g. a child's stdio pipes)."""
    return PipeTransport(read_fd, write_fd, close_fds=close_fds)


def pipe_pair() -> tuple[PipeTransport, PipeTransport]:
    """Two transports connected by two pipes, one each way."""
    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    return PipeTransport(a_read, a_write), PipeTransport(b_read, b_write)


def memory_pair() -> tuple[StreamTransport, StreamTransport]:
    """Two in-memory transports (``trio.testing.memory_stream_pair``), for tests."""
    import trio.testing  # here only: slow to import (it brings pytest)

    a, b = trio.testing.memory_stream_pair()
    return StreamTransport(a, "memory"), StreamTransport(b, "memory")
