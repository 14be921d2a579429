"""TLSListener: a Trio listener that hands out only finished TLS connections, and never dies.

Theory of operation
-------------------
A raw connection becomes a TLS connection only after its handshake, and a handshake is where
hostile clients hurt a server: garbage, plaintext HTTP, a ClientHello dribbled one byte per
second. So every handshake runs in its own task, under ``after(handshake_deadline)``; one that
fails, times out or is refused goes to ``on_error`` (default: one log line) and the listener
carries on. Nothing a client does ends ``serve``.

Admission control: with a :class:`StateBlockPool`, a state block is taken *before* the
handshake; when the pool is empty the raw connection is closed at once (``OutOfStateBlocks``
goes to ``on_error``), so the number of live connections and their memory stay bounded.

Two ways to use it. ``serve(handler)`` (and :func:`serve_tls`, shaped like
``trio.serve_tcp``) runs each connection's handshake and then ``handler`` in one task per
connection. ``accept()`` returns the next finished connection; inside ``async with listener:``
handshakes run concurrently in the listener's own nursery, outside it they run one at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, final

import trio

from ._base import StackAttribute, close_shielded
from ._deadline import after
from ._errors import OutOfStateBlocks, StackError
from ._mem import StateBlockPool
from ._tls import TLSServerLayer, TLSStream
from ._transports import wrap_stream

__all__ = ["TLSListener", "serve_tls"]

log = logging.getLogger("trio_tlsattach")

ErrorHook = Callable[[BaseException, Any], None]


def log_error(exc: BaseException, peer: Any) -> None:
    """The default ``on_error``: one log line per failed connection."""
    log.warning("connection from %s refused: %s", peer, exc)


@final
class TLSListener(trio.abc.Listener[TLSStream]):
    """Accepts transport connections and hands out handshaken :class:`TLSStream` objects.

    ::

        raw = (await trio.open_tcp_listeners(8443))[0]
        listener = TLSListener(raw, TLSServerLayer(cert), pool=StateBlockPool(1000))
        await listener.serve(handler)          # or: async with listener: await listener.accept()
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
        self.transport_listener = transport_listener
        self.layer = layer
        self.handshake_deadline = handshake_deadline
        self.pool = pool
        self.on_error = on_error or log_error
        self._ready: trio.MemorySendChannel[TLSStream] | None = None
        self._ready_out: trio.MemoryReceiveChannel[TLSStream] | None = None
        self._exit = AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    async def _handshake(self, raw: Any) -> TLSStream | None:
        """Handshake one raw connection; None (after on_error) when it did not work out."""
        stream = wrap_stream(raw)
        try:
            peer = stream.extra(StackAttribute.remote_address, None)
        except OSError:  # already reset by the peer: getpeername fails
            peer = None
        try:
            mem = self.pool.acquire() if self.pool is not None else None
        except OutOfStateBlocks as exc:
            await close_shielded(stream)
            self.on_error(exc, peer)
            return None
        try:
            tls = await TLSServerLayer(self.layer.context, mem=mem).attach(
                stream, after(self.handshake_deadline)
            )
        except (StackError, trio.BrokenResourceError, OSError) as exc:
            if mem is not None:
                mem.release()
            self.on_error(exc, peer)
            return None
        return tls

    async def accept(self) -> TLSStream:
        """The next connection whose handshake succeeded."""
        if self._ready_out is not None:
            return await self._ready_out.receive()
        while True:
            tls = await self._handshake(await self.transport_listener.accept())
            if tls is not None:
                return tls

    async def serve(
        self,
        handler: Callable[[TLSStream], Awaitable[object]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``handler(tls)`` for every connection, each in its own task; never returns.

        When cancelled, the transport listener is closed (as ``trio.serve_listeners`` does).

        The stream is closed when the handler returns. Errors in the handshake go to
        ``on_error``; errors a handler raises are logged and end only that connection.
        """

        async def one(raw: Any) -> None:
            tls = await self._handshake(raw)
            if tls is None:
                return
            try:
                await handler(tls)
            except (StackError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.info("connection ended: %s", exc)
            finally:
                await close_shielded(tls)

        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    nursery.start_soon(one, await self.transport_listener.accept())
        finally:  # as trio.serve_listeners does: serving ends, the listener is closed
            with trio.CancelScope(shield=True):
                await self.transport_listener.aclose()

    async def __aenter__(self) -> TLSListener:
        nursery = self._nursery = await self._exit.enter_async_context(trio.open_nursery())
        self._ready, self._ready_out = trio.open_memory_channel[TLSStream](math.inf)

        async def feed(raw: Any) -> None:
            tls = await self._handshake(raw)
            if tls is not None and self._ready is not None:
                await self._ready.send(tls)

        async def acceptor() -> None:
            while True:
                nursery.start_soon(feed, await self.transport_listener.accept())

        nursery.start_soon(acceptor)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop accepting, close the transport listener and any finished, unclaimed streams."""
        nursery_exit, self._exit = self._exit, AsyncExitStack()
        ready, ready_out = self._ready, self._ready_out
        self._ready = self._ready_out = None
        # First stop the acceptor and in-flight handshakes, then close what they used.
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
        await nursery_exit.aclose()
        with trio.CancelScope(shield=True):
            await self.transport_listener.aclose()
            if ready is not None and ready_out is not None:
                ready.close()
                async for unclaimed in ready_out:
                    await close_shielded(unclaimed)


async def serve_tls(
    handler: Callable[[TLSStream], Awaitable[object]],
    port: int,
    layer: TLSServerLayer,
    *,
    host: str | bytes | None = None,
    handshake_deadline: float = 10,
    pool: StateBlockPool | None = None,
    on_error: ErrorHook | None = None,
    task_status: trio.TaskStatus[list[TLSListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Like ``trio.serve_tcp``, with TLS: listen on ``port`` and run ``handler`` per connection.

    ``task_status.started`` receives the listeners (port 0 picks a free port: read it from
    ``listeners[0].transport_listener.socket.getsockname()``).
    """
    raw = await trio.open_tcp_listeners(port, host=host)
    listeners = [
        TLSListener(r, layer, handshake_deadline=handshake_deadline, pool=pool, on_error=on_error)
        for r in raw
    ]
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            await nursery.start(listener.serve, handler)
        task_status.started(listeners)
