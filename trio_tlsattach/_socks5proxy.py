"""The SOCKS5 proxy that ``tlsattach socks5`` runs: one connection's logic, and a serve loop.

Theory of operation
-------------------
:func:`socks5_proxy_connection` is libdill's example proxy (``examples/socks5proxy.c``) made
complete. On one accepted byte stream (plain TCP, or a :class:`TLSStream` for SOCKS over TLS) it

1. authenticates the client (:func:`socks5_proxy_auth`: no authentication, or exactly the one
   username/password pair given, compared in constant time);
2. reads the request (:func:`socks5_proxy_recvcommandbyname`); a request the client cannot get
   served is answered with its reply code before the connection ends: COMMAND_NOT_SUPPORTED for
   BIND, UDP ASSOCIATE or an unknown command, ADDRESS_TYPE_NOT_SUPPORTED for an unknown address
   type;
3. connects to the target with :func:`open_tcp` (a domain name is resolved by Trio and tried
   with happy eyeballs); a failure is answered with the reply code whose errno libdill's client
   gives back (connection refused, host or network unreachable, TTL expired for a timeout,
   general failure otherwise), so a libdill-style client sees the errno the proxy saw;
4. replies SUCCESS with the address the proxy bound for the outgoing connection, then pumps
   bytes both ways with :func:`pump` (half-closes propagate) until both directions end.

Everything up to the reply runs under one absolute deadline (``connect_deadline``), so a client
that dribbles its handshake cannot hold a connection slot for longer. Bytes a client sends
right behind its request (before the reply) were pushed back by the SOCKS5 calls and are
relayed first: nothing is lost.

Errors are raised to the caller (after the client was told, where SOCKS5 has a way to tell it),
so the caller's log line says why a connection ended; the caller closes ``stream``.

:func:`serve_socks5` runs that for every connection of a listener (a ``trio.SocketListener``,
or a :class:`TLSListener` for SOCKS over TLS), with a bound on live connections and one log
line per connection, and never dies of what a client does.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

import trio

from ._attributes import StackAttribute
from ._base import ByteStream, close_shielded
from ._connect import open_tcp
from ._deadline import after
from ._errors import DeadlineExceeded, InvalidArgument, NotSupported
from ._listener import TLSListener
from ._socks5 import (
    SOCKS5_COMMAND_NOT_SUPPORTED,
    SOCKS5_CONNECT,
    SOCKS5_CONNECTION_NOT_ALLOWED,
    SOCKS5_CONNECTION_REFUSED,
    SOCKS5_GENERAL_FAILURE,
    SOCKS5_HOST_UNREACHABLE,
    SOCKS5_NETWORK_UNREACHABLE,
    SOCKS5_SUCCESS,
    SOCKS5_TTL_EXPIRED,
    SOCKS5ProtocolError,
    credentials_checker,
    socks5_proxy_auth,
    socks5_proxy_recvcommandbyname,
    socks5_proxy_sendreply,
)
from ._transports import wrap_stream
from ._tunnel import STREAM_ERRORS, describe, failure, peer_of, pump

__all__ = ["reply_for", "serve_socks5", "socks5_proxy_connection"]

log = logging.getLogger("trio_tlsattach")

# The reverse of libdill's client table: the reply whose errno the client will see is the
# errno the proxy's own connect failed with.
_ERRNO_REPLIES: Final = {
    errno.ECONNREFUSED: SOCKS5_CONNECTION_REFUSED,
    errno.EHOSTUNREACH: SOCKS5_HOST_UNREACHABLE,
    errno.EHOSTDOWN: SOCKS5_HOST_UNREACHABLE,
    errno.ENETUNREACH: SOCKS5_NETWORK_UNREACHABLE,
    errno.ENETDOWN: SOCKS5_NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: SOCKS5_TTL_EXPIRED,
    errno.EACCES: SOCKS5_CONNECTION_NOT_ALLOWED,
    errno.EPERM: SOCKS5_CONNECTION_NOT_ALLOWED,
}


def reply_for(exc: BaseException) -> int:
    """The SOCKS5 reply code for a failed connect to the target.

    Trio's happy eyeballs wraps the per-address failures in one ``OSError`` without an errno;
    the first errno found among them decides. A name that does not resolve (``gaierror``) is
    HOST_UNREACHABLE, and anything unknown GENERAL_FAILURE.
    """
    if isinstance(exc, DeadlineExceeded):
        return SOCKS5_TTL_EXPIRED
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None:
            continue
        if isinstance(current, OSError) and current.errno in _ERRNO_REPLIES:
            return _ERRNO_REPLIES[current.errno]
        if isinstance(current, socket.gaierror):
            return SOCKS5_HOST_UNREACHABLE
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.append(current.__cause__)
    return SOCKS5_GENERAL_FAILURE


async def _refuse(stream: ByteStream, reply: int, deadline: float) -> None:
    """Tell the client why (best effort: it may be gone already); the caller raises."""
    with contextlib.suppress(*STREAM_ERRORS):
        await socks5_proxy_sendreply(stream, reply, None, deadline)


async def socks5_proxy_connection(
    stream: ByteStream,
    *,
    credentials: tuple[str, str] | None,
    connect_deadline: float,
    counts: list[int],
    on_target: Callable[[str, int], object] | None = None,
    idle_timeout: float | None = None,
) -> None:
    """Serve one SOCKS5 client on ``stream``: authenticate, connect, relay (see the module).

    ``credentials``: the ``(username, password)`` a client must give, or ``None`` for no
    authentication. ``connect_deadline``: the absolute deadline (Trio clock, as :func:`after`
    gives) for everything before the relaying starts. ``counts``: two ints, updated as bytes
    move (client to target, target to client), readable even after a cancellation.
    ``on_target(host, port)``: called with the requested target once it is known (for a log
    line). ``idle_timeout``: seconds without a byte either way after which the relay ends with
    :class:`DeadlineExceeded` (``None``: never), as ``tlsattach serve --idle-timeout``.
    Returns when both directions ended; raises what ended the connection otherwise.
    The caller closes ``stream``.
    """
    auth_fn = None if credentials is None else credentials_checker(*credentials)
    await socks5_proxy_auth(stream, auth_fn, connect_deadline)
    try:
        command, host, port = await socks5_proxy_recvcommandbyname(stream, connect_deadline)
    except SOCKS5ProtocolError as exc:
        if exc.reply is not None:
            await _refuse(stream, exc.reply, connect_deadline)
        raise
    if on_target is not None:
        on_target(host, port)
    if command != SOCKS5_CONNECT:
        await _refuse(stream, SOCKS5_COMMAND_NOT_SUPPORTED, connect_deadline)
        raise NotSupported(f"SOCKS5 command {command} is not supported (only CONNECT)")
    try:
        far = await open_tcp(host, port, deadline=connect_deadline)
    except OSError as exc:  # also DeadlineExceeded, and gaierror for a name
        await _refuse(stream, reply_for(exc), connect_deadline)
        raise
    async with far:
        bound = far.extra(StackAttribute.local_address, None) or ("0.0.0.0", 0)
        await socks5_proxy_sendreply(stream, SOCKS5_SUCCESS, bound, connect_deadline)
        await pump(stream, far, counts, idle_timeout)


async def serve_socks5(
    listener: trio.abc.Listener[Any],
    *,
    credentials: tuple[str, str] | None = None,
    connect_timeout: float = 10.0,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a SOCKS5 proxy on ``listener`` until cancelled; never returns otherwise.

    ``listener``: a ``trio.SocketListener`` (plain SOCKS5) or a :class:`TLSListener` (SOCKS
    over TLS; its handshakes run concurrently and failed ones only cost a log line).
    ``connect_timeout``: seconds each client gets from its first byte to the SUCCESS reply.
    ``max_connections``: live connections at most; one more is closed at once with a log line
    (behind a :class:`TLSListener` this counts after the handshake: give the listener a
    ``pool=StateBlockPool(n)`` to bound the handshakes too, as ``tlsattach serve`` does).
    ``idle_timeout``: as in :func:`socks5_proxy_connection`.
    Every connection ends with one log line: peer, target, bytes each way, duration, outcome.
    """
    if max_connections is not None and max_connections < 1:
        raise InvalidArgument("max_connections must be at least 1")
    slots = trio.Semaphore(max_connections) if max_connections else None

    async def handle(raw: Any) -> None:
        stream = wrap_stream(raw)
        assert isinstance(stream, ByteStream)
        if slots is not None and slots.value == 0:
            log.warning("%s refused: %d connections already", peer_of(stream), max_connections)
            await close_shielded(stream)
            return
        async with contextlib.AsyncExitStack() as stack:
            if slots is not None:
                await stack.enter_async_context(slots)
            stack.push_async_callback(close_shielded, stream)
            await _logged(stream, credentials, connect_timeout, idle_timeout)

    if isinstance(listener, TLSListener):
        await listener.serve(handle, task_status=task_status)
    else:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handle, [listener])
            task_status.started()


async def _logged(
    stream: ByteStream,
    credentials: tuple[str, str] | None,
    connect_timeout: float,
    idle_timeout: float | None,
) -> None:
    peer, started, counts = peer_of(stream), time.monotonic(), [0, 0]
    target = ["-"]
    how = "shutdown"  # what the line says if we are cancelled

    def note(host: str, port: int) -> None:
        target[0] = describe((host, port))

    try:
        await socks5_proxy_connection(
            stream,
            credentials=credentials,
            connect_deadline=after(connect_timeout),
            counts=counts,
            on_target=note,
            idle_timeout=idle_timeout,
        )
        how = "clean"
    except STREAM_ERRORS as exc:
        how = failure(exc)
    finally:
        log.info(
            "%s -> %s in=%d out=%d %.3fs %s",
            peer,
            target[0],
            counts[0],
            counts[1],
            time.monotonic() - started,
            how,
        )
