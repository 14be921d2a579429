"""``check_layer``: Trio's stream conformance checks plus libdill's attach/detach contract.

Theory of operation
-------------------
A layer is correct when (1) what it returns is a well-behaved stream and (2) it keeps the
contract of DESIGN.md section 1. ``check_layer`` proves both on fresh transport pairs:

1. The contract, on one pair: the handles the layer attached to are unusable while it is
   attached (EBADF on send, receive and close); data flows both ways at once; a receive with a
   deadline and nothing to read fails with ETIMEDOUT at that deadline and leaves the stream
   usable; an ``IMMEDIATE`` receive with nothing to read fails without time passing, and with
   data already there (socket and pipe transports) returns it; a clean ``detach`` run on both
   ends at once hands back *the very same* handles, with the bytes each peer sent right after
   its own detach readable on the other side.
2. On a second pair: ``send_eof`` makes the peer see the end while the other direction keeps
   working, a later send is EPIPE, and ``aclose`` closes the whole stack down to the transport.
3. Conformance: for byte layers, :func:`trio.testing.check_half_closeable_stream` (which runs
   :func:`trio.testing.check_two_way_stream` first); for message layers, message round trips
   (order, sizes, full duplex, two receivers at once, ``async for`` up to the peer's end).

Deadlines read the Trio clock: under ``MockClock(autojump_threshold=0)`` every wait is
virtual and the timings are checked exactly; under a real clock the deadlines are a few
milliseconds, so the whole check takes well under a second of waiting. Every phase has a
generous guard, so a layer that deadlocks fails with an ``AssertionError`` naming the phase
instead of hanging. The kit does not depend on pytest: failures are ``AssertionError`` (or
the layer's own exception, chained).
"""

from __future__ import annotations

import errno
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, TypeAlias

import trio
import trio.testing

from .._base import ByteStream, Handle, Kind, MessageStream, close_shielded
from .._connect import socketpair
from .._deadline import FOREVER, IMMEDIATE, after
from .._errors import BadHandle, DeadlineExceeded, SendAfterDone
from .._transports import FdTransport
from ._pairs import TRANSPORT_PAIRS

__all__ = ["AttachPair", "TransportPairSpec", "check_layer", "close_stack_of"]

AttachPair: TypeAlias = Callable[[Any, Any], Awaitable[tuple[Any, Any]]]
"""``async (a, b) -> (ta, tb)``: attach the layer(s) under test on both transports."""

TransportPairSpec: TypeAlias = (
    str | Callable[[], tuple[Any, Any]] | Callable[[], Awaitable[tuple[Any, Any]]]
)
"""A name from ``TRANSPORT_PAIRS``, or a function (sync or async) returning two transports."""

_ALPHABET: Final = b"abcdefghijklmnopqrstuvwxyz0123456789"
_MESSAGE_SIZES: Final = (1, 2, 100, 1000, 16384, 65536, 70000, 3)
_BULK_SIZE: Final = 200_000  # bigger than a socket or pipe buffer: flow control is exercised


class _Timing:
    """Deadline lengths for the clock in use (virtual under MockClock, short otherwise)."""

    def __init__(self) -> None:
        self.mock = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        self.wait = 5.0 if self.mock else 0.05  # the "receive times out" deadline
        self.guard = 120.0 if self.mock else 30.0  # a phase taking longer has hung


# --- small helpers ------------------------------------------------------------------------------


@asynccontextmanager
async def _phase(name: str, timing: _Timing) -> AsyncIterator[None]:
    """Run one phase of the check; turn a hang into an AssertionError that names it.

    A single failure inside a nursery comes out as that failure, not as an exception group.
    """
    try:
        with trio.move_on_after(timing.guard) as scope:
            yield
    except BaseExceptionGroup as group:
        raise _single(group) from None
    if scope.cancelled_caught:
        raise AssertionError(f"check_layer: {name}: no progress in {timing.guard} s (hung?)")


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one Exception inside ``group`` (nested groups included), else ``group`` itself."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return group


async def _raises(
    exc_type: type[BaseException],
    code: int | None,
    what: str,
    call: Callable[[], Awaitable[object]],
) -> BaseException:
    """Await ``call()`` and insist that it raises ``exc_type`` with errno ``code``."""
    try:
        await call()
    except exc_type as exc:
        got = getattr(exc, "errno", None)
        if code is not None and got != code:
            raise AssertionError(
                f"{what}: {exc_type.__name__} with errno {got}, expected "
                f"{errno.errorcode[code]} ({code})"
            ) from exc
        return exc
    except Exception as exc:
        raise AssertionError(f"{what}: raised {exc!r}, expected {exc_type.__name__}") from exc
    raise AssertionError(f"{what}: did not raise {exc_type.__name__}")


def _payload(rnd: random.Random, size: int) -> bytes:
    # Lowercase letters and digits: safe inside any delimiter- or terminator-framed message.
    return bytes(rnd.choices(_ALPHABET, k=size))


async def _send(handle: Handle, data: bytes, deadline: float = FOREVER) -> None:
    if isinstance(handle, MessageStream):
        await handle.send_message(data, deadline)
    else:
        assert isinstance(handle, ByteStream), f"{handle!r} is neither bytes nor messages"
        await handle.send_all(data, deadline)


async def _receive(handle: Handle, size: int, deadline: float = FOREVER) -> bytes:
    """One message, or exactly ``size`` bytes."""
    if isinstance(handle, MessageStream):
        message = await handle.receive_message(deadline)
        assert message is not None, f"{handle!r}: unexpected end of the message stream"
        return bytes(message)
    assert isinstance(handle, ByteStream), f"{handle!r} is neither bytes nor messages"
    got = bytearray()
    while len(got) < size:
        chunk = await handle.receive_some(size - len(got), deadline)
        assert chunk, f"{handle!r}: unexpected end of stream after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def _receive_end(handle: Handle) -> None:
    """The peer ended its direction: bytes give b"", messages give None."""
    if isinstance(handle, MessageStream):
        assert await handle.receive_message() is None, "a message arrived after the peer's end"
    else:
        assert isinstance(handle, ByteStream)
        assert await handle.receive_some() == b"", "bytes arrived after the peer's send_eof"


async def _one_way(x: Handle, y: Handle, payloads: Sequence[bytes]) -> None:
    """Send ``payloads`` from x while y receives them; check y got exactly those."""

    async def send() -> None:
        for payload in payloads:
            await _send(x, payload)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        if isinstance(y, MessageStream):
            for i, payload in enumerate(payloads):
                got = await _receive(y, len(payload))
                assert got == payload, (
                    f"message {i} ({len(payload)} bytes) came out as {len(got)} different bytes"
                )
        else:
            expected = b"".join(payloads)
            got = await _receive(y, len(expected))
            assert got == expected, f"{len(expected)} bytes sent, different bytes received"


async def _both_ways(x: Handle, y: Handle, rnd: random.Random, *, bulk: bool = False) -> None:
    """Full duplex: x->y and y->x at the same time."""
    if x.kind is Kind.MESSAGES:
        forth = [_payload(rnd, n) for n in _MESSAGE_SIZES]
        back = [_payload(rnd, n) for n in reversed(_MESSAGE_SIZES)]
    else:
        size = _BULK_SIZE if bulk else 1000
        forth = [rnd.randbytes(size), rnd.randbytes(7)]
        back = [rnd.randbytes(size // 2), rnd.randbytes(size // 2 + 1)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_one_way, x, y, forth)
        nursery.start_soon(_one_way, y, x, back)


def _chain(top: Handle) -> list[Handle]:
    """``top`` and every handle below it, top first."""
    handles: list[Handle] = []
    handle: Handle | None = top
    while handle is not None:
        handles.append(handle)
        handle = handle.below
    return handles


async def close_stack_of(handle: Handle) -> None:
    """Close ``handle`` and the whole stack it is part of, whoever owns it. Never raises BadHandle.

    Tests use this in cleanup: a layer may still be attached above a transport they made.
    """
    top = handle
    while top._owner is not None:
        top = top._owner
    if not top.closed:
        await close_shielded(top)
    if not handle.closed:  # a layer that detached from ``handle`` does not close it
        await close_shielded(handle)


def _pair_maker(spec: TransportPairSpec) -> Callable[[], Awaitable[tuple[Any, Any]]]:
    if isinstance(spec, str):
        if spec not in TRANSPORT_PAIRS:
            raise ValueError(
                f"unknown transport pair {spec!r}; one of {', '.join(TRANSPORT_PAIRS)} "
                "or a function returning two connected transports"
            )
        maker: Callable[[], object] = TRANSPORT_PAIRS[spec]
    elif callable(spec):
        maker = spec
    else:
        raise TypeError(f"transport_pair must be a name or a function, not {spec!r}")

    async def make() -> tuple[Any, Any]:
        result: Any = maker()
        if inspect.isawaitable(result):
            result = await result
        a, b = result
        return a, b

    return make


# --- the phases ---------------------------------------------------------------------------------


async def _check_owned(old: Handle, top: Handle) -> None:
    """A handle with a layer attached above it refuses every public call (EBADF)."""
    assert old.status == "owned", f"{old!r} below {top!r} is {old.status}, not owned"
    what = f"{old.label()} below {top.label()}"
    if isinstance(old, MessageStream):
        await _raises(BadHandle, errno.EBADF, f"send_message on {what}", lambda: _send(old, b"x"))
        await _raises(BadHandle, errno.EBADF, f"receive on {what}", old.receive_message)
    else:
        assert isinstance(old, ByteStream)
        await _raises(BadHandle, errno.EBADF, f"send_all on {what}", lambda: old.send_all(b"x"))
        await _raises(BadHandle, errno.EBADF, f"receive_some on {what}", old.receive_some)
        buf = bytearray(1)
        await _raises(
            BadHandle, errno.EBADF, f"receive_into on {what}", lambda: old.receive_into(buf)
        )
    await _raises(BadHandle, errno.EBADF, f"aclose on {what}", old.aclose)


async def _check_receive_deadline(handle: Handle, timing: _Timing) -> None:
    """Nothing to read: a deadline gives ETIMEDOUT at that time, IMMEDIATE at once."""
    calls: list[tuple[str, Callable[[float], Awaitable[object]]]]
    if isinstance(handle, MessageStream):
        calls = [("receive_message", handle.receive_message)]
    else:
        assert isinstance(handle, ByteStream)
        buf = bytearray(16)
        calls = [
            ("receive_some", lambda d: handle.receive_some(16, d)),
            ("receive_into", lambda d: handle.receive_into(buf, d)),
        ]
    for name, call in calls:
        what = f"{name} on {handle.label()} with nothing to read"
        start = trio.current_time()
        await _raises(
            DeadlineExceeded,
            errno.ETIMEDOUT,
            f"{what}, deadline after({timing.wait})",
            partial(call, after(timing.wait)),
        )
        elapsed = trio.current_time() - start
        assert elapsed >= timing.wait * 0.999, f"{what}: gave up after {elapsed} s, too early"
        if timing.mock:
            assert elapsed <= timing.wait + 1e-6, f"{what}: gave up after {elapsed} s, too late"

        start = trio.current_time()
        await _raises(
            DeadlineExceeded,
            errno.ETIMEDOUT,
            f"{what}, deadline IMMEDIATE",
            partial(call, IMMEDIATE),
        )
        elapsed = trio.current_time() - start
        if timing.mock:
            assert elapsed == 0, f"{what}: IMMEDIATE waited {elapsed} s (virtual)"
        else:
            assert elapsed < 1.0, f"{what}: IMMEDIATE took {elapsed} s"


async def _check_immediate_with_data(x: Handle, y: Handle, y_transport: Handle) -> None:
    """Data already there: an IMMEDIATE receive returns it (it does not need to wait)."""
    payload = b"ready-now"
    await _send(x, payload)
    if isinstance(y_transport, FdTransport):
        await trio.lowlevel.wait_readable(y_transport._read_waitable)
    await trio.testing.wait_all_tasks_blocked()
    try:
        got = await _receive(y, len(payload), IMMEDIATE)
    except DeadlineExceeded as exc:
        raise AssertionError(
            f"IMMEDIATE receive on {y.label()} failed although the data had arrived"
        ) from exc
    assert got == payload, f"IMMEDIATE receive returned {got!r}, expected {payload!r}"


async def _detach_both(
    x: Handle, y: Handle, timing: _Timing, markers: tuple[bytes, bytes]
) -> tuple[Handle, Handle]:
    """Detach both ends at once; each sends its marker on what it got back, at once.

    Each must get back the very handle it was attached to.
    """
    results: list[Handle | None] = [None, None]

    async def detach(i: int, handle: Handle) -> None:
        expected = handle.below
        assert expected is not None, f"{handle!r} is not attached to anything"
        method = getattr(handle, "detach", None)
        assert method is not None, f"{type(handle).__name__} has no detach()"
        below = await method(after(timing.guard / 2))
        assert below is expected, (
            f"detach returned {below!r}, not the {expected!r} it was attached to"
        )
        results[i] = below
        await _send(below, markers[i])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(detach, 0, x)
        nursery.start_soon(detach, 1, y)
    ux, uy = results
    assert ux is not None and uy is not None
    return ux, uy


async def _check_end_and_close(
    ta: Handle, tb: Handle, a: Handle, b: Handle, rnd: random.Random
) -> None:
    """send_eof: the peer sees the end, the other way still works; aclose closes the stack."""
    await ta.send_eof()  # type: ignore[attr-defined]
    await _raises(
        SendAfterDone,
        errno.EPIPE,
        f"send on {ta.label()} after send_eof()",
        lambda: _send(ta, b"late"),
    )
    await _receive_end(tb)
    await _one_way(tb, ta, [_payload(rnd, 100), _payload(rnd, 5)])

    stack = _chain(ta)
    await ta.aclose()
    for handle in stack:
        assert handle.closed, f"closing {ta.label()} left {handle!r} open"
    assert a.closed, "closing the top layer did not close the transport"
    await ta.aclose()  # closing twice is fine
    await _raises(BadHandle, errno.EBADF, f"send on a closed {ta.label()}", lambda: _send(ta, b"x"))
    await tb.aclose()
    assert b.closed, "closing the top layer did not close the transport"


async def _check_messages(
    make: Callable[[], Awaitable[tuple[Handle, Handle, Handle, Handle]]],
    rnd: random.Random,
) -> None:
    """Message round trips, the message layers' counterpart of Trio's stream checks."""
    a, b, ta, tb = await make()
    assert isinstance(ta, MessageStream) and isinstance(tb, MessageStream)
    try:
        # Many messages of many sizes, both ways at once, in order.
        for _ in range(3):
            await _both_ways(ta, tb, rnd)

        # Two receivers at once on one end: the second is refused, the first still gets its.
        async with trio.open_nursery() as nursery:
            got: list[bytes | None] = []

            async def first() -> None:
                got.append(await tb.receive_message())

            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            await _raises(
                trio.BusyResourceError,
                None,
                "a second concurrent receive_message",
                tb.receive_message,
            )
            await ta.send_message(b"for the first receiver")
        assert got == [b"for the first receiver"], f"the first receiver got {got!r}"

        # async for stops at the peer's end; the stream stays open the other way.
        sent = [_payload(rnd, n) for n in (10, 1, 5000)]
        for message in sent:
            await ta.send_message(message)
        await ta.send_eof()
        received = [message async for message in tb]
        assert received == sent, "async for did not yield exactly the messages sent"
        assert await tb.receive_message() is None, "the end of the stream is not sticky"
        await tb.send_message(b"reply after the end")
        assert await ta.receive_message() == b"reply after the end"
        await tb.send_eof()
        assert await ta.receive_message() is None
    finally:
        for handle in (ta, tb, a, b):
            await close_stack_of(handle)


# --- the check ----------------------------------------------------------------------------------


async def check_layer(
    attach_pair: AttachPair, *, transport_pair: TransportPairSpec = socketpair
) -> None:
    """Check a layer against Trio's stream checks and libdill's attach/detach contract.

    ``attach_pair(a, b)`` gets two connected transports and returns the two attached top
    handles ``(ta, tb)``; attach both ends concurrently when the layer handshakes::

        async def attach_pair(a, b):
            client = TLSClientLayer(client_ctx, server_hostname="localhost")
            return await attach_both(a, b, client.attach, TLSServerLayer(server_ctx).attach)

        await check_layer(attach_pair)                          # over a socketpair
        await check_layer(attach_pair, transport_pair="tcp")    # TCP over 127.0.0.1
        await check_layer(attach_pair, transport_pair=lambda: unix_pair(path))

    ``transport_pair`` is a name from ``TRANSPORT_PAIRS`` (``"socketpair"``, ``"pipe"``,
    ``"memory"``, ``"tcp"``) or a function, sync or async, returning two connected
    transports. ``attach_pair`` may stack several layers; ``detach`` is then checked on the
    top one and must hand back the handle right below it. Message layers must accept messages
    of lowercase ASCII letters and digits of up to 70000 bytes.

    What is checked is listed in the module docstring. Raises ``AssertionError`` (or the
    layer's own exception) on the first violation; closes everything it made either way.
    Under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``)
    no real time is spent waiting, and timings are checked exactly.
    """
    make_transports = _pair_maker(transport_pair)
    timing = _Timing()
    rnd = random.Random(0x7A11)

    async def make() -> tuple[Handle, Handle, Handle, Handle]:
        a, b = await make_transports()
        try:
            ta, tb = await attach_pair(a, b)
        except BaseException:
            for handle in (a, b):
                await close_stack_of(handle)
            raise
        try:
            for top, bottom in ((ta, a), (tb, b)):
                assert isinstance(top, Handle), f"attach_pair returned {top!r}, not a handle"
                assert top is not bottom, "attach_pair attached nothing"
                assert top.status == "open", f"{top!r} is {top.status} right after attach"
                assert bottom in _chain(top), f"{bottom!r} is not below {top!r}"
            assert ta.kind is tb.kind, "the two ends are of different kinds"
        except BaseException:
            for handle in (ta, tb, a, b):
                if isinstance(handle, Handle):
                    await close_stack_of(handle)
            raise
        return a, b, ta, tb

    # 1. The contract on one pair: ownership, data, deadlines, detach.
    async with _phase("attach", timing):
        a, b, ta, tb = await make()
    handles = [ta, tb, a, b]
    try:
        async with _phase("ownership while attached", timing):
            below_a, below_b = ta.below, tb.below
            assert below_a is not None and below_b is not None
            for top in (ta, tb):
                for old in _chain(top)[1:]:
                    await _check_owned(old, top)

        async with _phase("data both ways", timing):
            await _both_ways(ta, tb, rnd, bulk=True)

        async with _phase("receive deadlines", timing):
            for top in (tb, ta):
                await _check_receive_deadline(top, timing)
            await _both_ways(ta, tb, rnd)  # only waiting: both ends still work both ways

        if isinstance(a, FdTransport) and isinstance(b, FdTransport):
            async with _phase("IMMEDIATE with data already there", timing):
                await _check_immediate_with_data(ta, tb, b)
                await _check_immediate_with_data(tb, ta, a)

        async with _phase("detach on both ends at once", timing):
            markers = (b"sent by a right after its detach", b"sent by b right after detach")
            ua, ub = await _detach_both(ta, tb, timing, markers)
            handles += [ua, ub]
            assert ua is below_a, f"detach returned {ua!r}, not the {below_a!r} it attached to"
            assert ub is below_b, f"detach returned {ub!r}, not the {below_b!r} it attached to"
            for top, below in ((ta, ua), (tb, ub)):
                assert top.status == "detached", f"{top!r} is {top.status} after detach"
                assert below.status == "open", f"{below!r} is {below.status} after detach"
                await _raises(
                    BadHandle,
                    errno.EBADF,
                    f"send on a detached {top.label()}",
                    partial(_send, top, b"x"),
                )

        async with _phase("the handles handed back", timing):
            got = await _receive(ua, len(markers[1]))
            assert got == markers[1], f"bytes sent right after the peer's detach: {got!r}"
            got = await _receive(ub, len(markers[0]))
            assert got == markers[0], f"bytes sent right after the peer's detach: {got!r}"
            await _both_ways(ua, ub, rnd)
    finally:
        for handle in handles:
            await close_stack_of(handle)

    # 2. On a fresh pair: send_eof, then aclose closes the whole stack.
    async with _phase("attach", timing):
        a, b, ta, tb = await make()
    try:
        async with _phase("send_eof and aclose", timing):
            await _check_end_and_close(ta, tb, a, b, rnd)
    finally:
        for handle in (ta, tb, a, b):
            await close_stack_of(handle)

    # 3. Conformance.
    if ta.kind is Kind.BYTES:

        async def stream_maker() -> tuple[trio.abc.HalfCloseableStream, ...]:
            _, _, x, y = await make()
            assert isinstance(x, ByteStream) and isinstance(y, ByteStream)
            return x, y

        async with _phase("trio.testing.check_half_closeable_stream", timing):
            await trio.testing.check_half_closeable_stream(stream_maker, None)  # type: ignore[arg-type]
    else:
        async with _phase("message round trips", timing):
            await _check_messages(make, rnd)
