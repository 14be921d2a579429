"""TLSListener: a Trio listener that hands out only finished TLS connections, and never dies.

Theory of operation
-------------------
A raw connection becomes a TLS connection only after its handshake, and a handshake is where
hostile clients hurt a server: garbage, plaintext HTTP, a ClientHello dribbled one byte per
second, a reset halfway. So every handshake runs under ``after(handshake_deadline)``; one that
fails, times out or is refused goes to ``on_error`` (default: one log line), its connection is
closed, and the listener carries on. Nothing a client does ends ``serve``.

Admission control: with a :class:`StateBlockPool` (the listener's ``pool=``, or the layer's), a
state block is taken *before* the handshake and handed to the connection as its ``mem``; when
the pool is empty the connection is refused and :class:`OutOfStateBlocks` goes to ``on_error``
("refused: pool exhausted"). The block comes back when the TLS stream is closed or detached, so
live connections and their memory stay bounded by the pool's size.

A refusal is a clean close, not a reset: closing a socket whose ClientHello sits unread in the
kernel makes the kernel answer with RST, and a crowd turned away that way is a reset storm that
clients report as a network fault. So a refused connection gets a fatal ``internal_error``
alert (RFC 8446 6.2: "such as a memory allocation failure"; the client's TLS library reports
it as such), our FIN, and its own bytes read and dropped until its FIN, for at most
``REFUSAL_DRAIN`` seconds; only then is the socket closed. No state block and no TLS object is
spent on it.

Running out of file descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM from ``accept``) is not the
client's fault either: like ``trio.serve_listeners``, the listener logs it, waits 100 ms and
accepts again. A pool only bounds connections if the process may hold that many descriptors:
:func:`fit_fd_limit` raises the soft ``RLIMIT_NOFILE`` as far as a pool needs (up to the hard
limit) and says how many connections fit when even that is too low, so that a server can
shrink its pool (``tlsattach serve --max-connections`` does, with a warning) instead of
meeting EMFILE under load.

Three ways to use it, from most to least common:

* ``await listener.serve(handler)`` (or :func:`serve_tls`, shaped like ``trio.serve_tcp``): one
  task per connection runs its handshake, then ``handler(tls)``, then closes the stream. Slow
  handshakes never hold up others.
* ``async with listener: tls = await listener.accept()``: the ``async with`` block owns a
  nursery in which a background task accepts raw connections and runs every handshake in its own
  task; finished streams are delivered to ``accept()`` through a channel with no buffer (a
  finished stream waits in its task until someone accepts it, and is closed if the listener
  closes first). This is the ``trio.abc.Listener`` interface with concurrent handshakes.
* ``await listener.accept()`` without ``async with``: Trio gives a plain method no nursery to
  start background tasks in, so this handshakes inline, one connection at a time. It is correct
  (a failed handshake is reported and the next connection tried) but a slow client delays the
  next ``accept()`` by up to ``handshake_deadline``. Use one of the forms above on a server
  facing the internet.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Final, final

import trio

from ._attributes import StackAttribute, describe
from ._base import close_shielded
from ._deadline import after
from ._errors import DeadlineExceeded, OutOfStateBlocks, StackError
from ._mem import StateBlock, StateBlockPool
from ._tls import TLSStream
from ._tlslayer import TLSServerLayer
from ._transports import wrap_stream

__all__ = ["FD_RESERVE", "TLSListener", "fit_fd_limit", "open_tls_listeners", "serve_tls"]

log = logging.getLogger("trio_tlsattach")

ErrorHook = Callable[[BaseException, Any], None]
"""``on_error(exc, peer)``: called for every connection that did not become a TLS stream."""

Handler = Callable[[TLSStream], Awaitable[object]]

# accept() errors that mean "this process is out of something", not "the listener is broken".
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_SLEEP: Final = 0.1

# A plaintext TLS record (legacy version 1.2, as RFC 8446 5.1 asks) with a fatal (2)
# internal_error (80) alert: what a refused client is told before our FIN.
_REFUSAL_ALERT: Final = bytes([21, 3, 3, 0, 2, 2, 80])
REFUSAL_DRAIN: Final = 1.0
"""Seconds a refused client gets to close its end before we close ours (see the module doc)."""

# What a failed handshake can raise (the stream is already closed when these arrive).
_HANDSHAKE_ERRORS: Final = (StackError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


FD_RESERVE: Final = 64
"""Descriptors :func:`fit_fd_limit` keeps for everything but connections: stdio, listening
sockets, the event loop's own, log files, refused connections being drained."""


def fit_fd_limit(connections: int, fds_per_connection: int = 1) -> int:
    """Make room for ``connections`` live connections; returns how many fit (maybe fewer, or 0).

    Raises the soft ``RLIMIT_NOFILE`` to what they need (``fds_per_connection`` each, plus
    :data:`FD_RESERVE`), as far as the hard limit allows; never lowers it.
    """
    if connections < 1 or fds_per_connection < 1:
        raise ValueError("connections and fds_per_connection must be at least 1")
    if sys.platform == "win32":  # no RLIMIT_NOFILE: sockets are not bounded that way
        return connections
    import resource  # POSIX only: imported here so that the package imports everywhere

    needed = connections * fds_per_connection + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):  # a sandbox may refuse even that
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.debug("RLIMIT_NOFILE raised from %d to %d", soft, wanted)
            soft = wanted
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(0, min(connections, (soft - FD_RESERVE) // fds_per_connection))


def log_error(exc: BaseException, peer: Any) -> None:
    """The default ``on_error``: one log line per connection that did not become TLS."""
    who = describe(peer)
    if isinstance(exc, OutOfStateBlocks):
        log.warning("%s refused: pool exhausted (%s)", who, exc)
    elif isinstance(exc, DeadlineExceeded):
        log.warning("%s handshake timed out", who)
    else:
        log.warning("%s handshake failed: %s", who, exc)


async def _refuse(stream: Any) -> None:
    """Turn a raw connection away without a reset: alert, FIN, drain, close."""
    # A client that reset or left first needs no politeness: its errors end the drain.
    try:
        with contextlib.suppress(*_HANDSHAKE_ERRORS), trio.move_on_after(REFUSAL_DRAIN):
            await stream.send_all(_REFUSAL_ALERT)
            await stream.send_eof()
            more = True
            while more:  # the client's ClientHello: read, so that close() sends no RST
                more = bool(await stream.receive_some(4096))
    finally:
        await close_shielded(stream)


def _remote(tls: TLSStream) -> Any:
    try:
        return tls.extra(StackAttribute.remote_address, None)
    except OSError:
        return None


@final
class TLSListener(trio.abc.Listener[TLSStream]):
    """Accepts transport connections and hands out handshaken :class:`TLSStream` objects.

    ``transport_listener``: any ``trio.abc.Listener`` of byte streams (``trio.SocketListener``
    for TCP or a Unix socket). ``layer``: the :class:`TLSServerLayer` (its context, with the
    certificate and ALPN, is shared; each connection gets its own state block).
    ``handshake_deadline``: seconds a client gets to finish its handshake. ``pool``: a
    :class:`StateBlockPool` bounding live connections (default: the layer's pool, if any).
    ``on_error(exc, peer)``: called for each failed, timed-out or refused handshake.

    ::

        raw = (await trio.open_tcp_listeners(8443))[0]
        listener = TLSListener(raw, TLSServerLayer(cert), pool=StateBlockPool(1000))
        await listener.serve(handler)          # or: async with listener: await listener.accept()

    See the module documentation for what ``accept()`` does inside and outside ``async with``.
    """

    def __init__(
        self,
        transport_listener: trio.abc.Listener[Any],
        layer: TLSServerLayer,
        *,
        handshake_deadline: float = 10,
        pool: StateBlockPool | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        if not isinstance(layer, TLSServerLayer):
            raise TypeError(f"layer must be a TLSServerLayer, not {type(layer).__name__}")
        if handshake_deadline <= 0:
            raise ValueError("handshake_deadline must be a positive number of seconds")
        self.transport_listener = transport_listener
        self.layer = layer
        self.handshake_deadline = handshake_deadline
        self.pool = pool if pool is not None else layer._pool
        self.on_error = on_error or log_error
        self._ready: trio.MemorySendChannel[TLSStream] | None = None
        self._ready_out: trio.MemoryReceiveChannel[TLSStream] | None = None
        self._exit = AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    # --- one connection -------------------------------------------------------------------

    async def _accept_raw(self) -> Any:
        """The next raw connection; out-of-descriptors errors are waited out, not raised."""
        while True:
            try:
                return await self.transport_listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                log.error("accept failed: %s; retrying in %.1f s", exc, _CAPACITY_SLEEP)
                await trio.sleep(_CAPACITY_SLEEP)

    async def _handshake(self, raw: Any) -> TLSStream | None:
        """Handshake one raw connection; None (after on_error) when it did not work out."""
        stream = wrap_stream(raw)
        try:
            peer = stream.extra(StackAttribute.remote_address, None)
        except OSError:  # already reset by the peer: getpeername fails
            peer = None
        mem: StateBlock | None = None
        if self.pool is not None:
            try:
                mem = self.pool.acquire()
            except OutOfStateBlocks as exc:
                self.on_error(exc, peer)  # at once: the refusal may take REFUSAL_DRAIN
                await _refuse(stream)
                return None
        try:
            # One layer per connection: the context is shared, the block is this connection's.
            return await TLSServerLayer(self.layer.context, mem=mem).attach(
                stream, after(self.handshake_deadline)
            )
        except _HANDSHAKE_ERRORS as exc:  # attach closed the stream, and released the block
            if mem is not None:
                mem.release()  # idempotent; covers a failure before the layer claimed it
            self.on_error(exc, peer)
            return None
        except BaseException:
            if mem is not None:
                mem.release()
            raise

    # --- trio.abc.Listener ----------------------------------------------------------------

    async def accept(self) -> TLSStream:
        """The next connection whose handshake succeeded.

        Inside ``async with listener:`` handshakes run concurrently in the background;
        otherwise they run inline, one at a time (see the module documentation).
        Raises ``trio.ClosedResourceError`` once the listener is closed.
        """
        if self._ready_out is not None:
            try:
                return await self._ready_out.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise trio.ClosedResourceError("the listener is closed") from None
        while True:
            tls = await self._handshake(await self._accept_raw())
            if tls is not None:
                return tls

    async def serve(
        self,
        handler: Handler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``handler(tls)`` for every connection, each in its own task; never returns.

        Each task runs the handshake (failures go to ``on_error``), then the handler, then
        closes the stream (a live stream gets a close_notify). A handler that fails with a
        stream error (:class:`StackError`, ``trio.BrokenResourceError``,
        ``trio.ClosedResourceError``) ends only its connection, with a log line; any other
        exception is a bug in the handler and propagates, as in ``trio.serve_listeners``.
        When cancelled, every connection is closed and so is the transport listener.
        """

        async def one(raw: Any) -> None:
            tls = await self._handshake(raw)
            if tls is None:
                return
            try:
                await handler(tls)
            except (StackError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("%s connection ended: %s", describe(_remote(tls)), exc)
            finally:
                await close_shielded(tls)

        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    nursery.start_soon(one, await self._accept_raw())
        finally:  # as trio.serve_listeners does: serving ends, the listener is closed
            with trio.CancelScope(shield=True):
                await self.transport_listener.aclose()

    async def __aenter__(self) -> TLSListener:
        """Start accepting and handshaking in the background (see :meth:`accept`)."""
        if self._nursery is not None:
            raise RuntimeError("this TLSListener is already entered")
        nursery = self._nursery = await self._exit.enter_async_context(trio.open_nursery())
        ready, self._ready_out = trio.open_memory_channel[TLSStream](0)
        self._ready = ready

        async def deliver(raw: Any) -> None:
            tls = await self._handshake(raw)
            if tls is None:
                return
            try:
                await ready.send(tls)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await close_shielded(tls)  # nobody will ever accept it
            except BaseException:
                await close_shielded(tls)  # cancelled: the listener is closing
                raise

        async def acceptor() -> None:
            try:
                while True:
                    nursery.start_soon(deliver, await self._accept_raw())
            except trio.ClosedResourceError:  # someone closed the transport listener
                ready.close()

        nursery.start_soon(acceptor)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop accepting; close the transport listener and every unclaimed connection."""
        nursery_exit, self._exit = self._exit, AsyncExitStack()
        ready, ready_out = self._ready, self._ready_out
        self._ready = self._ready_out = None
        # First stop the acceptor and in-flight handshakes (their streams close themselves).
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
        try:
            await nursery_exit.aclose()
        finally:
            with trio.CancelScope(shield=True):
                if ready is not None and ready_out is not None:
                    ready.close()
                    ready_out.close()
                await self.transport_listener.aclose()


async def open_tls_listeners(
    port: int,
    layer: TLSServerLayer,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handshake_deadline: float = 10,
    pool: StateBlockPool | None = None,
    on_error: ErrorHook | None = None,
) -> list[TLSListener]:
    """Like ``trio.open_tcp_listeners``, each listener wrapped in a :class:`TLSListener`.

    All of them share ``pool``, so the bound on live connections is global.
    """
    raw = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    return [
        TLSListener(r, layer, handshake_deadline=handshake_deadline, pool=pool, on_error=on_error)
        for r in raw
    ]


async def serve_tls(
    handler: Handler,
    port: int,
    layer: TLSServerLayer,
    *,
    host: str | bytes | None = None,
    backlog: int | None = None,
    handshake_deadline: float = 10,
    pool: StateBlockPool | None = None,
    on_error: ErrorHook | None = None,
    task_status: trio.TaskStatus[list[TLSListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like ``trio.serve_tcp``, with TLS: listen on ``port`` and run ``handler`` per connection.

    Run it in a nursery; ``await nursery.start(serve_tls, ...)`` returns the listeners (port 0
    picks a free port: ``listeners[0].transport_listener.socket.getsockname()``)::

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_tls, handler, 8443, TLSServerLayer(cert))
    """
    listeners = await open_tls_listeners(
        port, layer, host=host, backlog=backlog, handshake_deadline=handshake_deadline,
        pool=pool, on_error=on_error,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            await nursery.start(listener.serve, handler)
        task_status.started(listeners)
