"""``check_layer``: Trio's stream conformance checks plus the attach/detach contract.

Theory of operation
-------------------
A layer is correct when (1) what it returns is a well-behaved Trio stream (for byte layers,
``trio.testing.check_half_closeable_stream`` proves it) and (2) it keeps libdill's contract:
the handle it attached to is unusable while attached (EBADF), data flows both ways, a clean
detach on both ends hands back *the same* objects with bytes sent after the peer's detach
readable from them, a receive deadline gives ETIMEDOUT and leaves the stream usable, IMMEDIATE
never waits, and closing the top closes everything below. Deadlines read the Trio clock, so
under ``MockClock(autojump_threshold=0)`` these checks take no real time; under a real clock
they use deadlines of a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from .._base import ByteStream, Handle, Kind, MessageStream
from .._deadline import IMMEDIATE, after
from .._errors import BadHandle, DeadlineExceeded
from ._pairs import TRANSPORT_PAIRS

__all__ = ["check_layer"]

AttachPair = Callable[[Any, Any], Awaitable[tuple[Handle, Handle]]]


def _short_wait() -> float:
    clock = trio.lowlevel.current_clock()
    return 5.0 if isinstance(clock, trio.testing.MockClock) else 0.05


async def _send(handle: Handle, data: bytes) -> None:
    if isinstance(handle, MessageStream):
        await handle.send_message(data)
    else:
        assert isinstance(handle, ByteStream)
        await handle.send_all(data)


async def _receive(handle: Handle, size: int, deadline: float = -1) -> bytes:
    if isinstance(handle, MessageStream):
        message = await handle.receive_message(deadline)
        assert message is not None, "unexpected end of message stream"
        return message
    assert isinstance(handle, ByteStream)
    got = bytearray()
    while len(got) < size:
        chunk = await handle.receive_some(size - len(got), deadline)
        assert chunk, "unexpected end of stream"
        got += chunk
    return bytes(got)


async def _exchange(x: Handle, y: Handle, payload: bytes) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send, x, payload)
        assert await _receive(y, len(payload)) == payload


async def _detach_both(x: Any, y: Any) -> tuple[Any, Any]:
    results: dict[int, Any] = {}

    async def detach(i: int, handle: Any) -> None:
        results[i] = await handle.detach()
        if i == 1:  # bytes sent right after a detach must reach the other side's stream
            await results[i].send_all(b"after-detach")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(detach, 0, x)
        nursery.start_soon(detach, 1, y)
    return results[0], results[1]


async def check_layer(attach_pair: AttachPair, *, transport_pair: str = "socketpair") -> None:
    """Check a layer against Trio's stream checks and the attach/detach/deadline contract.

    ``attach_pair(a, b)`` gets two connected transports and returns the two attached top
    handles (attach both ends concurrently when the layer handshakes)::

        async def attach_pair(a, b):
            return await tls_pair(a, b, ca, cert)

        await check_layer(attach_pair, transport_pair="tcp")

    ``transport_pair`` names one of ``TRANSPORT_PAIRS`` (socketpair, pipe, memory, tcp).
    Raises ``AssertionError`` (or the layer's own error) on the first violation.
    """
    make_transports = TRANSPORT_PAIRS[transport_pair]

    async def make() -> tuple[Handle, Handle]:
        a, b = await make_transports()
        return await attach_pair(a, b)

    # 1. Trio's conformance checks (byte layers).
    probe_a, probe_b = await make()
    kind = probe_a.kind
    await probe_a.aclose()
    await probe_b.aclose()
    if kind is Kind.BYTES:
        await trio.testing.check_half_closeable_stream(make, None)  # type: ignore[arg-type]

    # 2. The contract.
    a, b = await make_transports()
    ta, tb = await attach_pair(a, b)
    try:
        for old in (a, b):
            assert isinstance(old, ByteStream)
            try:
                await old.send_all(b"x")
            except BadHandle as exc:
                assert exc.errno == 9
            else:
                raise AssertionError("the transport below a layer still accepted send_all")
            try:
                await old.receive_some(1)
            except BadHandle:
                pass
            else:
                raise AssertionError("the transport below a layer still accepted receive_some")

        await _exchange(ta, tb, b"ping" * 1000)
        await _exchange(tb, ta, b"pong" * 1000)

        # A receive that only waited times out and leaves the stream usable.
        start = trio.current_time()
        try:
            await _receive(tb, 1, after(_short_wait()))
        except DeadlineExceeded as exc:
            assert exc.errno == 110
        else:
            raise AssertionError("a receive with nothing to read did not time out")
        assert trio.current_time() - start >= _short_wait() * 0.99
        start = trio.current_time()
        try:
            await _receive(tb, 1, IMMEDIATE)
        except DeadlineExceeded:
            pass
        else:
            raise AssertionError("an IMMEDIATE receive with nothing to read did not time out")
        # Exact under MockClock; under a real clock, well below any deadline it could have used.
        assert trio.current_time() - start < _short_wait() / 5, "IMMEDIATE waited"
        await _exchange(ta, tb, b"still usable")

        # Clean detach on both ends gives back the very same transports, still working.
        ua, ub = await _detach_both(ta, tb)
        assert ua is a and ub is b, "detach did not return the handle it attached to"
        assert await _receive(ua, len(b"after-detach")) == b"after-detach"
        await _exchange(ua, ub, b"raw both ways")
        await _exchange(ub, ua, b"raw the other way")

        # Closing the top closes the whole stack below it.
        ta, tb = await attach_pair(ua, ub)
        await ta.aclose()
        assert a.closed, "closing the top layer did not close the transport"
    finally:
        for handle in (ta, tb, a, b):
            if handle.status != "owned":
                await handle.aclose()
