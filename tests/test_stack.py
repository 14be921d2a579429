"""ProtocolStack: push, pop, repr, find, kind checks and failure handling."""

import errno
from typing import Any

import pytest
import trio

import trio_tlsattach as ta
from trio_tlsattach.testing import PassThroughLayer, PassThroughStream, unix_pair


async def test_push_pop_repr(tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b = await unix_pair(tmp_path_factory.mktemp("u") / "s")
    async with ta.ProtocolStack(a) as stack, b:
        assert repr(stack) == "<ProtocolStack unix>"
        first = await stack.push(PassThroughLayer())
        second = await stack.push(PassThroughLayer())
        assert repr(stack) == "<ProtocolStack unix > pass > pass>"
        assert stack.top is second
        assert stack.layers == [a, first, second]
        assert stack.find(PassThroughStream) is second
        assert stack.find(ta.TLSStream) is None
        await second.send_all(b"through two layers")
        assert await b.receive_some(100) == b"through two layers"
        b_side = await b.send_all(b"back up")
        assert b_side is None
        assert await second.receive_some(100) == b"back up"
        assert await stack.pop() is first
        assert await stack.pop() is a
        assert repr(stack) == "<ProtocolStack unix>"
        with pytest.raises(ta.NotSupported) as info:
            await stack.pop()
        assert info.value.errno == errno.ENOTSUP
    assert a.closed


async def test_async_with_closes_everything() -> None:
    a, b = ta.socketpair()
    async with ta.ProtocolStack(a) as stack:
        await stack.push(PassThroughLayer())
        await stack.push(PassThroughLayer())
    assert all(h.closed for h in stack.layers)
    assert await b.receive_some(10) == b""
    await b.aclose()


class _FailingLayer:
    below_kind = ta.Kind.BYTES

    async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> Any:
        await stream.aclose()  # like libdill: a failed attach closes what it was given
        raise ta.TLSError("handshake failed")


async def test_failed_push_closes_the_stack() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    await stack.push(PassThroughLayer())
    with pytest.raises(ta.BadHandle):
        # The pass layer owns a: a layer attaching to `a` directly is refused, a left alone.
        await PassThroughLayer().attach(a)
    with pytest.raises(ta.TLSError):
        await stack.push(_FailingLayer())
    assert a.closed
    await b.aclose()


class _Messages(ta.MessageStream):
    """A message stream stub, to provoke a kind mismatch."""

    def label(self) -> str:
        return "stub"

    async def _close_resources(self) -> None:
        await trio.lowlevel.checkpoint()

    async def _receive_next(self, deadline: float) -> bytes | None:
        return None

    async def _send_message(self, data: Any, deadline: float) -> None:
        pass

    async def _send_eof(self, deadline: float) -> None:
        pass


async def test_byte_layer_on_message_stream_is_protocol_mismatch() -> None:
    stub = _Messages()
    with pytest.raises(ta.ProtocolMismatch) as info:
        await ta.ProtocolStack(stub).push(PassThroughLayer())
    assert info.value.errno == errno.EPROTO
    assert isinstance(info.value, TypeError)
    assert stub.closed  # what was passed in is closed, as libdill does
    stub2 = _Messages()
    with pytest.raises(ta.ProtocolMismatch):
        await ta.TLSServerLayer(_cert()).attach(stub2)
    assert stub2.closed


def _cert() -> Any:
    import trustme

    return trustme.CA().issue_cert("localhost")


async def test_detach_hands_back_pushed_back_bytes() -> None:
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    top = await stack.push(PassThroughLayer())
    top.unread(b"kept")
    assert await stack.pop() is a
    assert await a.receive_some(10) == b"kept"
    await stack.aclose()
    await b.aclose()
