"""The term layer: final messages, detach with later messages kept, errors."""

import errno

import pytest
import trio

import trio_tlsattach as ta
from trio_tlsattach.testing import attach_both


async def _pair() -> tuple[ta.TermStream, ta.TermStream]:
    a, b = ta.socketpair()
    x, y = await attach_both(a, b, ta.PrefixLayer(2).attach, ta.PrefixLayer(2).attach)
    return await attach_both(x, y, ta.TermLayer(b"BYE").attach, ta.TermLayer(b"BYE").attach)


async def test_final_message_ends_iteration() -> None:
    x, y = await _pair()
    await x.send_message(b"hello")
    await ta.term_done(x)
    with pytest.raises(ta.SendAfterDone) as info:
        await x.send_message(b"late")
    assert info.value.errno == errno.EPIPE
    assert [m async for m in y] == [b"hello"]
    assert await y.receive_message() is None
    await y.send_message(b"still open the other way")
    assert await x.receive_message() == b"still open the other way"
    await x.aclose()
    await y.aclose()


async def test_final_message_cannot_be_sent_as_data() -> None:
    x, y = await _pair()
    with pytest.raises(ta.InvalidArgument):
        await x.send_message(b"BYE")
    await x.aclose()
    await y.aclose()


async def test_detach_keeps_messages_after_the_peers_final_one() -> None:
    x, y = await _pair()
    below_y = y.below
    await x.send_message(b"unread before BYE")

    async def other_side() -> None:
        prefix = await ta.term_detach(x)
        await prefix.send_message(b"after BYE")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_side)
        prefix_y = await y.detach()
    assert prefix_y is below_y
    assert y.unread_messages == [b"unread before BYE"]
    assert await prefix_y.receive_message() == b"after BYE"
    await prefix_y.aclose()
    assert x.below is not None
    await x.below.aclose()


async def test_eof_without_final_message_is_connection_broken() -> None:
    a, b = ta.socketpair()
    prefix = await ta.PrefixLayer(2).attach(a)
    term = await ta.term_attach(prefix, b"END")
    await b.send_all(b"\x00\x01x")
    await b.send_eof()
    assert await term.receive_message() == b"x"
    with pytest.raises(ta.ConnectionBroken) as info:
        await term.receive_message()
    assert info.value.errno == errno.ECONNRESET
    await term.aclose()
    await b.aclose()


async def test_term_on_a_byte_stream_is_protocol_mismatch() -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.ProtocolMismatch):
        await ta.TermLayer(b"END").attach(a)
    assert a.closed
    await b.aclose()
    with pytest.raises(ta.NotSupported):
        await ta.term_done(b)  # type: ignore[arg-type]
