"""The prefix layer: contract, wire format, limits, and libdill's facade."""

import errno

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach._cores._common import FrameState
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both, check_layer, tcp_pair


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(transport: str) -> None:
    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        layer = ta.PrefixLayer(4)
        return await attach_both(a, b, layer.attach, layer.attach)

    await check_layer(attach_pair, transport_pair=transport)


async def test_wire_format_little_endian_3() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(3, big_endian=False).attach(a)
    await msgs.send_message(b"First")
    assert await b.receive_some(100) == b"\x05\x00\x00First"
    await b.send_all(b"\x06\x00\x00Second\x00\x00\x00")
    assert await msgs.receive_message() == b"Second"
    assert await msgs.receive_message() == b""  # an empty message is a message
    await msgs.aclose()
    await b.aclose()


async def test_libdill_facade_flags() -> None:
    a, b = ta.socketpair()
    msgs = await ta.prefix_attach(a, 2, ta.PREFIX_LITTLE_ENDIAN)
    await ta.msend(msgs, b"ab")
    assert await b.receive_some(100) == b"\x02\x00ab"
    await b.send_all(b"\x01\x00z")
    assert await ta.mrecv(msgs) == b"z"
    raw = await ta.prefix_detach(msgs)
    assert raw is a
    with pytest.raises(ta.NotSupported):
        await ta.prefix_detach(a)  # type: ignore[arg-type]
    with pytest.raises(ta.NotSupported):
        await ta.msend(a, b"x")  # type: ignore[arg-type]
    await a.aclose()
    await b.aclose()


async def test_oversized_message_is_skipped() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4, max_size=10).attach(a)
    await b.send_all(b"\x00\x00\x00\x14" + b"x" * 20 + b"\x00\x00\x00\x02ok")
    with pytest.raises(ta.MessageTooLarge) as info:
        await msgs.receive_message()
    assert info.value.errno == errno.EMSGSIZE
    assert await msgs.receive_message() == b"ok"
    await msgs.aclose()
    await b.aclose()


async def test_message_too_long_for_the_header_is_refused_before_sending() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(1).attach(a)
    with pytest.raises(ta.MessageTooLarge):
        await msgs.send_message(b"x" * 256)
    await msgs.send_message(b"y" * 255)  # nothing was sent before: the stream is intact
    got = b""
    while len(got) < 256:
        got += await b.receive_some()
    assert got == b"\xff" + b"y" * 255
    with pytest.raises(TypeError):
        await msgs.send_message("text")
    await msgs.aclose()
    await b.aclose()


@pytest.mark.parametrize("bad", [0, 9, True, "4", -1])
def test_bad_header_lengths_are_einval(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        ta.PrefixLayer(bad)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


async def test_clean_eof_and_iteration() -> None:
    a, b = ta.socketpair()
    x, y = await attach_both(a, b, ta.PrefixLayer(2).attach, ta.PrefixLayer(2).attach)
    for m in (b"one", b"two", b"three"):
        await x.send_message(m)
    await x.send_eof()
    with pytest.raises(ta.SendAfterDone):
        await x.send_message(b"late")
    assert [m async for m in y] == [b"one", b"two", b"three"]
    await x.aclose()
    await y.aclose()


async def test_detach_pushes_back_bytes_read_past_the_last_message() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(1).attach(a)
    await b.send_all(b"\x02hiRAW BYTES")
    await trio.testing.wait_all_tasks_blocked()
    assert await msgs.receive_message() == b"hi"
    msgs.unread_message(b"again")
    raw = await msgs.detach()
    got = b""
    while len(got) < len(b"\x05againRAW BYTES"):
        got += await raw.receive_some()
    assert got == b"\x05againRAW BYTES"
    await raw.aclose()
    await b.aclose()


async def test_detach_mid_message_gives_the_partial_message_back_as_bytes() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(2).attach(a)
    await b.send_all(b"\x00\x05hel")
    with pytest.raises(ta.DeadlineExceeded):
        await msgs.receive_message(ta.IMMEDIATE)
    assert msgs.core.state is FrameState.PAYLOAD
    raw = await ta.prefix_detach(msgs)
    assert await raw.receive_some(100) == b"\x00\x05hel"
    await raw.aclose()
    await b.aclose()


async def test_detach_while_skipping_finishes_the_skip() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4, max_size=4).attach(a)
    await b.send_all(b"\x00\x00\x00\x10" + b"x" * 10)
    with pytest.raises(ta.MessageTooLarge):
        await msgs.receive_message()
    assert msgs.core.state is FrameState.SKIPPING
    got: list[ta.ByteStream] = []

    async def detach() -> None:
        got.append(await msgs.detach())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(detach)
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # waiting for the rest of the oversized message
        await b.send_all(b"y" * 6 + b"RAW")
    assert got == [a]
    assert await a.receive_some(100) == b"RAW"  # the oversized message's tail is gone
    await a.aclose()
    await b.aclose()


async def test_detach_while_skipping_then_eof_is_broken_and_closes() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4, max_size=4).attach(a)
    await b.send_all(b"\x00\x00\x01\x00" + b"x" * 10)
    await b.send_eof()
    with pytest.raises(ta.MessageTooLarge):
        await msgs.receive_message()
    with pytest.raises(ta.ConnectionBroken) as info:
        await msgs.detach()
    assert info.value.errno == errno.ECONNRESET
    assert a.closed
    assert msgs.closed
    await b.aclose()


async def test_detach_deadline_while_skipping_closes_the_stack(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(1, max_size=2).attach(a)
    await b.send_all(b"\x09abc")
    with pytest.raises(ta.MessageTooLarge):
        await msgs.receive_message()
    with pytest.raises(ta.DeadlineExceeded):
        await msgs.detach(ta.after(3))
    assert a.closed
    await b.aclose()


async def test_immediate_returns_what_is_already_there() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    await b.send_all(b"\x00\x00\x00\x03one\x00\x00\x00\x03two")
    assert await msgs.receive_message(ta.IMMEDIATE) == b"one"
    assert await msgs.receive_message(ta.IMMEDIATE) == b"two"
    with pytest.raises(ta.DeadlineExceeded):
        await msgs.receive_message(ta.IMMEDIATE)
    await msgs.aclose()
    await b.aclose()


async def test_each_call_is_a_checkpoint_and_cancel_loses_nothing() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    await b.send_all(b"\x00\x00\x00\x02hi")
    with trio.CancelScope() as scope:
        scope.cancel()
        await msgs.receive_message()  # cancelled on entry, before reading anything
    assert scope.cancelled_caught
    with trio.testing.assert_checkpoints():
        assert await msgs.receive_message() == b"hi"
    with trio.testing.assert_checkpoints():
        await msgs.send_message(b"x")
    await msgs.aclose()
    await b.aclose()


async def test_big_messages_over_tcp() -> None:
    a, b = await tcp_pair()
    x, y = await attach_both(a, b, ta.PrefixLayer(4).attach, ta.PrefixLayer(4).attach)
    big = bytes(range(256)) * 8192  # 2 MiB: many reads below, over the default limit
    y2 = await ta.PrefixLayer(4, max_size=len(big)).attach(await y.detach())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(x.send_message, big)
        assert await y2.receive_message() == big
    await x.aclose()
    await y2.aclose()


async def test_recipe_is_read_only_and_has_a_repr() -> None:
    layer = ta.PrefixLayer(3, big_endian=False, max_size=100)
    assert (layer.hdrlen, layer.big_endian, layer.max_size) == (3, False, 100)
    assert repr(layer) == "PrefixLayer(3, big_endian=False, max_size=100)"
    with pytest.raises(AttributeError):
        layer.hdrlen = 4  # type: ignore[misc]
    with pytest.raises(ta.InvalidArgument):
        ta.PrefixLayer(4, max_size=0)
    with pytest.raises(ta.InvalidArgument):
        ta.PrefixLayer(4, big_endian=1)  # type: ignore[arg-type]
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument):
        await ta.prefix_attach(a, 4, 2)
    with pytest.raises(ta.InvalidArgument):
        await layer.attach(a, deadline=-5)
    msgs = await layer.attach(a)
    assert msgs.label() == "prefix(3)"
    assert repr(msgs) == "<FramedStream prefix(3)>"
    assert a.status == "owned"
    await msgs.aclose()
    assert repr(msgs) == "<FramedStream prefix(3) closed>"
    await b.aclose()


async def test_old_handle_and_concurrent_senders() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    with pytest.raises(ta.BadHandle):
        await a.send_all(b"x")
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(msgs.send_message, b"x" * 20_000_000)
            await trio.testing.wait_all_tasks_blocked()
            await msgs.send_message(b"y")
    await msgs.aclose()
    await b.aclose()


async def test_concurrent_receivers_and_detach_during_a_receive() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(msgs.receive_message)
            await trio.testing.wait_all_tasks_blocked()
            await msgs.receive_message()
    with pytest.RaisesGroup(trio.BusyResourceError, ta.BadHandle):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(msgs.receive_message)
            await trio.testing.wait_all_tasks_blocked()
            await msgs.detach()  # refused; a failed detach closes the stack
    assert a.closed
    await b.aclose()


async def test_prefix_on_prefix_is_protocol_mismatch() -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    with pytest.raises(ta.ProtocolMismatch) as info:
        await ta.PrefixLayer(4).attach(msgs)
    assert info.value.errno == errno.EPROTO
    assert msgs.closed
    await b.aclose()
