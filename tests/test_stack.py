"""ProtocolStack: push, pop, repr, find, kind checks and failure handling.

These tests need no TLS: the pass-through layer of the testing kit and small stubs stand in.
"""

import errno
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach.testing import (
    MessagePassThroughLayer,
    PassThroughLayer,
    PassThroughStream,
    unix_pair,
)


def top_of(stack: ta.ProtocolStack) -> ta.Handle:
    """``stack.top``, read afresh: mypy keeps an ``is`` narrowing of it across push and pop."""
    return stack.top


async def test_push_pop_repr(short_socket_dir: Path) -> None:
    a, b = await unix_pair(short_socket_dir / "s")
    async with ta.ProtocolStack(a) as stack, b:
        assert repr(stack) == "<ProtocolStack unix>"
        assert top_of(stack) is a
        assert stack.layers == [a]
        first = await stack.push(PassThroughLayer())
        assert repr(stack) == "<ProtocolStack unix > pass>"
        second = await stack.push(PassThroughLayer(), deadline=ta.after(10))
        assert repr(stack) == "<ProtocolStack unix > pass > pass>"
        assert top_of(stack) is second
        assert stack.layers == [a, first, second]
        assert second.below is first
        assert first.below is a
        assert a.below is None
        assert (a.status, first.status, second.status) == ("owned", "owned", "open")
        assert stack.find(PassThroughStream) is second  # the topmost match
        assert stack.find(ta.SocketTransport) is a
        # mypy refuses an abstract class for find's type[H] (python/mypy#4717): nothing here
        # instantiates it, find only runs isinstance.
        assert stack.find(ta.MessageStream) is None  # type: ignore[type-abstract]
        await second.send_all(b"through two layers")
        assert await b.receive_some(100) == b"through two layers"
        await b.send_all(b"back up")
        assert await second.receive_some(100) == b"back up"
        assert await stack.pop() is first
        assert repr(stack) == "<ProtocolStack unix > pass>"
        assert second.status == "detached"
        assert await stack.pop(deadline=ta.after(10)) is a
        assert repr(stack) == "<ProtocolStack unix>"
        assert top_of(stack) is a
        assert a.status == "open"
        with pytest.raises(ta.NotSupported) as info:
            await stack.pop()
        assert info.value.errno == errno.ENOTSUP
        assert not a.closed  # a refused pop changes nothing
        await a.send_all(b"plain again")
        assert await b.receive_some(100) == b"plain again"
    assert a.closed


async def test_async_with_closes_everything() -> None:
    a, b = ta.socketpair()
    async with ta.ProtocolStack(a) as stack:
        await stack.push(PassThroughLayer())
        await stack.push(PassThroughLayer())
    assert len(stack.layers) == 3
    assert all(h.closed for h in stack.layers)
    assert await b.receive_some(10) == b""
    await b.aclose()


async def test_async_with_closes_on_error() -> None:
    a, b = ta.socketpair()

    async def use() -> None:
        async with ta.ProtocolStack(a) as stack:
            await stack.push(PassThroughLayer())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await use()
    assert a.closed
    await b.aclose()


async def test_aclose_closes_everything_and_is_idempotent() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    top = await stack.push(PassThroughLayer())
    await stack.aclose()
    assert top.closed
    assert a.closed
    await stack.aclose()
    with pytest.raises(ta.BadHandle):
        await stack.push(PassThroughLayer())  # nothing to push onto
    await b.aclose()


async def test_stack_over_a_trio_stream() -> None:
    x, y = trio.testing.memory_stream_pair()
    async with ta.ProtocolStack(x) as stack:
        assert repr(stack) == "<ProtocolStack stream>"
        top = await stack.push(PassThroughLayer())
        await top.send_all(b"adapted")
        assert await y.receive_some(10) == b"adapted"
    await y.aclose()


# --- failures -----------------------------------------------------------------------------------


class _RaisingLayer:
    """Its attach fails without closing anything (a careless layer)."""

    below_kind = ta.Kind.BYTES

    async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> Any:
        await trio.lowlevel.checkpoint()
        raise ta.TLSError("handshake failed")


class _HalfAttachingLayer:
    """Takes ownership, then fails (the stack must still close it all)."""

    below_kind = ta.Kind.BYTES

    async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> Any:
        top = await PassThroughLayer().attach(stream)
        assert top is not None
        raise ta.ConnectionBroken("peer went away mid-handshake")


@pytest.mark.parametrize("layer", [_RaisingLayer, _HalfAttachingLayer])
async def test_failed_push_closes_the_stack(layer: type) -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    middle = await stack.push(PassThroughLayer())
    with pytest.raises((ta.TLSError, ta.ConnectionBroken)):
        await stack.push(layer())
    assert middle.closed
    assert a.closed
    assert stack.top is middle  # the failed layer never became the top
    assert await b.receive_some(10) == b""  # the peer sees the connection go
    await b.aclose()


async def test_cancelled_push_closes_the_stack(autojump_clock: trio.testing.MockClock) -> None:
    class _SlowLayer:
        below_kind = ta.Kind.BYTES

        async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> Any:
            await trio.sleep_forever()

    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    with trio.move_on_after(5) as scope:
        await stack.push(_SlowLayer())
    assert scope.cancelled_caught
    assert a.closed
    await b.aclose()


async def test_push_onto_a_handle_owned_elsewhere_is_bad_handle() -> None:
    a, b = ta.socketpair()
    top = await PassThroughLayer().attach(a)
    with pytest.raises(ta.BadHandle) as info:
        await ta.ProtocolStack(a).push(PassThroughLayer())
    assert info.value.errno == errno.EBADF
    assert not a.closed  # not the caller's to give, so not closed either
    await top.aclose()
    await b.aclose()


async def test_bad_deadline_on_push_closes_the_stack() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    with pytest.raises(ta.InvalidArgument):
        await stack.push(PassThroughLayer(), deadline=-2)
    assert a.closed  # a failed attach closes what it was given, as libdill does
    await b.aclose()


# --- kind checks --------------------------------------------------------------------------------


class _Messages(ta.MessageStream):
    """A message stream stub on nothing, to provoke kind mismatches."""

    def label(self) -> str:
        return "stub"

    async def _close_resources(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _receive_next(self, deadline: float) -> bytes | None:
        await trio.lowlevel.checkpoint()
        return None

    async def _send_message(self, data: Any, deadline: float) -> None:
        await trio.lowlevel.checkpoint()

    async def _send_eof(self, deadline: float) -> None:
        await trio.lowlevel.checkpoint()


async def test_byte_layer_on_a_message_stream_is_protocol_mismatch() -> None:
    stub = _Messages()
    stack = ta.ProtocolStack(stub)
    assert repr(stack) == "<ProtocolStack stub>"
    with pytest.raises(ta.ProtocolMismatch) as info:
        await stack.push(PassThroughLayer())
    assert info.value.errno == errno.EPROTO
    assert isinstance(info.value, TypeError)
    assert "bytestream" in str(info.value)
    assert stub.closed  # what was passed in is closed, as libdill does


async def test_message_layer_on_a_byte_stream_is_protocol_mismatch() -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.ProtocolMismatch) as info:
        await ta.ProtocolStack(a).push(MessagePassThroughLayer())
    assert info.value.errno == errno.EPROTO
    assert a.closed
    assert await b.receive_some(10) == b""
    await b.aclose()


async def test_message_layer_on_a_message_stream() -> None:
    stub = _Messages()
    stack = ta.ProtocolStack(stub)
    top = await stack.push(MessagePassThroughLayer())
    assert repr(stack) == "<ProtocolStack stub > mpass>"
    assert stub.status == "owned"
    top.unread_message(b"kept")
    assert await stack.pop() is stub
    assert await stub.receive_message() == b"kept"  # handed back in front
    assert await stub.receive_message() is None
    await stack.aclose()
    assert stub.closed


# --- detach and pushback ------------------------------------------------------------------------


async def test_detach_hands_back_pushed_back_bytes_in_front() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    top = await stack.push(PassThroughLayer())
    await b.send_all(b" world")
    await trio.testing.wait_all_tasks_blocked()
    top.unread(b"hello")  # read past the layer's end, say
    assert await stack.pop() is a
    got = b""
    while len(got) < len(b"hello world"):
        got += await a.receive_some(100)
    assert got == b"hello world"
    await stack.aclose()
    await b.aclose()


async def test_pushback_survives_two_detaches() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    lower = await stack.push(PassThroughLayer())
    upper = await stack.push(PassThroughLayer())
    lower.unread(b"2")
    upper.unread(b"1")
    await stack.pop()
    await stack.pop()
    assert await a.receive_some(10) == b"12"
    await stack.aclose()
    await b.aclose()


async def test_closing_a_detached_layer_leaves_the_stream_alone() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    async with await stack.push(PassThroughLayer()) as top:
        assert await stack.pop() is a
    assert top.status == "detached"
    assert not a.closed
    await a.send_all(b"alive")
    assert await b.receive_some(10) == b"alive"
    await stack.aclose()
    await b.aclose()


async def test_pop_of_a_layer_without_detach_is_not_supported() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    top = await stack.push(PassThroughLayer())
    stack._top = _NoDetach(top)  # a top that has something below but cannot detach
    with pytest.raises(ta.NotSupported):
        await stack.pop()
    await top.aclose()
    await b.aclose()


class _NoDetach(ta.ByteStream):
    """A stand-in top with a ``below`` but no ``detach`` method."""

    def __init__(self, below: ta.Handle) -> None:
        super().__init__()
        self._below = below

    def label(self) -> str:
        return "nodetach"

    async def _close_resources(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = -1) -> bytes:
        raise NotImplementedError

    async def _receive_into(
        self, buffer: Any, deadline: float = -1, checkpoint: bool = True
    ) -> int:
        raise NotImplementedError

    async def _send_all(self, data: Any, deadline: float = -1, checkpoint: bool = True) -> None:
        raise NotImplementedError

    async def _wait_send_all_might_not_block(self) -> None:
        raise NotImplementedError

    async def _send_eof(self, deadline: float = -1) -> None:
        raise NotImplementedError
