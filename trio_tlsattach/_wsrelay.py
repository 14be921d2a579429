"""What ``tlsattach serve --ws`` runs per connection: WebSocket on the TLS stream, then echo or
relay (websockify's job).

Theory of operation
-------------------
:func:`ws_relay` attaches a server-side :class:`~trio_tlsattach._ws.WSLayer` to the stream it is
given (the TLS stream a listener accepted), within ``handshake_timeout`` seconds, and then:

* with no backend (``open_far`` is None), sends every message back as it came (text as text,
  binary as binary);
* with a backend, opens it (``await open_far()``) and relays both ways at once: each message's
  bytes go to the backend as they are, and each chunk the backend sends comes back as one binary
  message. The end of either side is passed on as a half-close: the WebSocket peer's close
  becomes ``send_eof`` on the backend, the backend's end becomes our close frame (1000).

At the end the close handshake is completed with status 1000 and the stream is handed back
(``detach``), so the caller logs and closes it as it does for a plain tunnel. Any failure (bad
WebSocket input, a reset, a deadline) closes the WebSocket layer and the stream under it and is
raised as it is, never inside an exception group, so the caller's ``STREAM_ERRORS`` catches it.
With ``idle_timeout``, a connection where no message or backend byte moved for that many
seconds ends with :class:`DeadlineExceeded`, as ``tlsattach serve --idle-timeout`` asks.
``counts`` is updated as bytes move: ``counts[0]`` the payload bytes received from the WebSocket
peer, ``counts[1]`` those sent to it (a text message counts its UTF-8 bytes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from ._base import ByteStream, close_shielded
from ._deadline import after
from ._errors import NotSupported
from ._transports import wrap_stream
from ._tunnel import CHUNK, both_ways, half_close, idle_deadline
from ._ws import WSLayer, WSStream

__all__ = ["CLOSE_TIMEOUT", "ws_relay"]

CLOSE_TIMEOUT: Final = 10.0
"""Seconds the final close handshake may take once both directions are done."""


def _size(message: bytes | str) -> int:
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)


async def _echo(ws: WSStream, counts: list[int], moved: Callable[[], None]) -> None:
    while (message := await ws.receive()) is not None:
        counts[0] += _size(message)
        moved()
        await ws.send(message)
        counts[1] += _size(message)
        moved()


async def _to_backend(
    ws: WSStream, far: ByteStream, counts: list[int], moved: Callable[[], None]
) -> None:
    while (message := await ws.receive()) is not None:
        data = message.encode("utf-8") if isinstance(message, str) else message
        counts[0] += len(data)
        moved()
        await far.send_all(data)
        moved()
    await half_close(far)  # the WebSocket peer closed: so does what the backend is sent


async def _from_backend(
    far: ByteStream, ws: WSStream, counts: list[int], moved: Callable[[], None]
) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while n := await far.receive_into(buffer):
        moved()
        await ws.send(view[:n])
        counts[1] += n
        moved()
    await ws.send_eof(status=1000)  # the backend ended: our close


async def ws_relay(
    stream: Any,
    open_far: Callable[[], Awaitable[Any]] | None,
    counts: list[int],
    *,
    handshake_timeout: float = 10.0,
    idle_timeout: float | None = None,
) -> None:
    """Serve one WebSocket connection on ``stream``: echo, or relay to ``await open_far()``.

    Returns once the close handshake (status 1000) is complete, with ``stream`` handed back
    to the caller (still open: the caller closes it). Raises what ended the connection
    otherwise, with ``stream`` closed::

        async def handler(tls):
            counts = [0, 0]
            await ws_relay(tls, None, counts)       # echo
            await tls.aclose()
    """
    ws = await WSLayer(server_side=True).attach(stream, after(handshake_timeout))
    try:
        with idle_deadline(idle_timeout) as moved:
            if open_far is None:
                await _echo(ws, counts, moved)
            else:
                async with wrap_stream(await open_far()) as far:
                    if not isinstance(far, ByteStream):
                        raise NotSupported(f"the backend must be a byte stream, not {far!r}")
                    await both_ways(
                        lambda: _to_backend(ws, far, counts, moved),
                        lambda: _from_backend(far, ws, counts, moved),
                    )
        await ws.detach(after(CLOSE_TIMEOUT), status=1000)
    except BaseException:
        await close_shielded(ws)
        raise
