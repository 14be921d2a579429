"""Connected pairs of transports and of attached layers, for tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trustme

from .._base import ByteStream, Layer
from .._connect import memory_pair, open_tcp, pipe_pair, socketpair
from .._deadline import FOREVER
from .._stack import ProtocolStack
from .._tls import TLSStream
from .._tlslayer import TLSClientLayer, TLSServerLayer
from .._transports import SocketTransport

__all__ = ["TRANSPORT_PAIRS", "attach_both", "stack_pair", "tcp_pair", "tls_pair", "unix_pair"]

PairMaker = Callable[[], Awaitable[tuple[ByteStream, ByteStream]]]


async def tcp_pair(host: str = "127.0.0.1") -> tuple[SocketTransport, SocketTransport]:
    """Two connected TCP transports over loopback (an ephemeral port, never a fixed one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        listener.setblocking(False)
        client = await open_tcp(host, listener.getsockname()[1])
        while True:
            try:
                server, _ = listener.accept()
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
    return client, SocketTransport(server)


async def unix_pair(path: str | os.PathLike[str]) -> tuple[SocketTransport, SocketTransport]:
    """Two transports connected through a Unix socket bound at ``path``."""
    path = os.fspath(path)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        server, _ = listener.accept()
    os.unlink(path)
    await trio.lowlevel.checkpoint()
    return SocketTransport(client), SocketTransport(server)


async def _sync_pair(
    make: Callable[[], tuple[ByteStream, ByteStream]],
) -> tuple[ByteStream, ByteStream]:
    await trio.lowlevel.checkpoint()
    a, b = make()
    return a, b


TRANSPORT_PAIRS: dict[str, PairMaker] = {
    "socketpair": lambda: _sync_pair(socketpair),
    "pipe": lambda: _sync_pair(pipe_pair),
    "memory": lambda: _sync_pair(memory_pair),
    "tcp": tcp_pair,
}
"""Every transport pair this package offers, by name (unix pairs need a path: unix_pair)."""


async def attach_both(
    a: Any,
    b: Any,
    attach_a: Callable[[Any], Awaitable[Any]],
    attach_b: Callable[[Any], Awaitable[Any]],
) -> tuple[Any, Any]:
    """Attach on both ends at once (a handshake needs both) and return both results."""
    results: dict[str, Any] = {}

    async def run(key: str, attach: Callable[[Any], Awaitable[Any]], stream: Any) -> None:
        results[key] = await attach(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "a", attach_a, a)
        nursery.start_soon(run, "b", attach_b, b)
    return results["a"], results["b"]


async def tls_pair(
    a: Any, b: Any, ca: trustme.CA, cert: trustme.LeafCert, hostname: str = "localhost"
) -> tuple[TLSStream, TLSStream]:
    """TLS client on ``a`` and TLS server on ``b``, handshaken: returns (client, server)."""
    return await attach_both(
        a,
        b,
        TLSClientLayer(ca, server_hostname=hostname).attach,
        TLSServerLayer(cert).attach,
    )


async def stack_pair(
    *layers: Layer[Any] | tuple[Layer[Any], Layer[Any]],
    transport: str = "socketpair",
    deadline: float = FOREVER,
) -> tuple[ProtocolStack, ProtocolStack]:
    """Two connected stacks with the same layers pushed on both ends, each push on both at once.

    Each item of ``layers`` is one layer for both ends (framing) or a pair
    ``(first_end_layer, second_end_layer)`` (TLS: client, server). ``transport`` names an entry
    of ``TRANSPORT_PAIRS``. If a push fails, both stacks are closed and the error is raised::

        client, server = await stack_pair(
            (TLSClientLayer(ca, server_hostname="localhost"), TLSServerLayer(cert)),
            PrefixLayer(4),
        )
        async with client, server:
            await client.top.send_message(b"hello")
            assert await server.top.receive_message() == b"hello"
    """
    if transport not in TRANSPORT_PAIRS:
        raise ValueError(f"unknown transport pair {transport!r}; one of {sorted(TRANSPORT_PAIRS)}")
    a, b = await TRANSPORT_PAIRS[transport]()
    first, second = ProtocolStack(a), ProtocolStack(b)
    try:
        for item in layers:
            ours, theirs = item if isinstance(item, tuple) else (item, item)
            async with trio.open_nursery() as nursery:  # a handshake needs both ends at once
                nursery.start_soon(first.push, ours, deadline)
                nursery.start_soon(second.push, theirs, deadline)
    except BaseException:
        with trio.CancelScope(shield=True):
            await first.aclose()
            await second.aclose()
        raise
    return first, second
