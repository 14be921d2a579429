"""The term layer: final messages, detach with later messages kept, errors."""

import errno

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both


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


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_contract(transport: str) -> None:
    """check_layer's contract, for a layer that sits on a message stream."""
    a, b = await TRANSPORT_PAIRS[transport]()
    pa, pb = await attach_both(a, b, ta.CRLFLayer().attach, ta.CRLFLayer().attach)
    x, y = await attach_both(pa, pb, ta.TermLayer(b"").attach, ta.TermLayer(b"").attach)
    for old in (pa, pb, a):
        with pytest.raises(ta.BadHandle):
            await old.aclose()
    with pytest.raises(ta.BadHandle):
        await pa.send_message(b"x")
    for sender, receiver in ((x, y), (y, x)):
        for i in range(3):
            await sender.send_message(b"ping %d" % i)
        for i in range(3):
            assert await receiver.receive_message() == b"ping %d" % i
    # A receive that only waited times out (real clock: a short deadline) and stays usable.
    with pytest.raises(ta.DeadlineExceeded):
        await y.receive_message(ta.after(0.02))
    with pytest.raises(ta.DeadlineExceeded):
        await y.receive_message(ta.IMMEDIATE)
    await x.send_message(b"still usable")
    assert await y.receive_message() == b"still usable"
    # Clean detach on both ends hands back the very same message streams, still working.
    ux, uy = await attach_both(x, y, ta.term_detach, ta.term_detach)
    assert (ux, uy) == (pa, pb)
    await ux.send_message(b"framed again")
    assert await uy.receive_message() == b"framed again"
    # Closing the top closes the whole stack.
    x, y = await attach_both(ux, uy, ta.TermLayer(b".").attach, ta.TermLayer(b".").attach)
    await x.aclose()
    assert pa.closed
    assert a.closed
    await y.aclose()
    assert b.closed


async def test_wire_format_and_messages_already_read_past_the_final_one() -> None:
    a, b = ta.socketpair()
    term = await ta.term_attach(await ta.prefix_attach(a, 2, ta.PREFIX_BIG_ENDIAN), b"BYE")
    await term.send_message(b"hi")
    assert await b.receive_some(100) == b"\x00\x02hi"  # term adds no bytes of its own
    # One burst: a message, the final one, then two more for whoever detaches.
    await b.send_all(b"\x00\x02m1\x00\x03BYE\x00\x06after1\x00\x06after2")
    await trio.testing.wait_all_tasks_blocked()
    prefix = await term.detach()
    assert await b.receive_some(100) == b"\x00\x03BYE"
    assert term.unread_messages == [b"m1"]
    assert [await prefix.receive_message(), await prefix.receive_message()] == [
        b"after1",
        b"after2",
    ]
    await prefix.aclose()
    await b.aclose()


async def test_detach_deadline_closes_the_stack(autojump_clock: trio.testing.MockClock) -> None:
    x, y = await _pair()
    start = trio.current_time()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await x.detach(ta.after(4))  # the peer never sends its final message
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - start == pytest.approx(4)
    assert x.closed
    assert await y.receive_message() is None  # our final message did go out
    await y.aclose()


async def test_bad_inputs_and_concurrent_senders() -> None:
    with pytest.raises(ta.InvalidArgument):
        ta.TermLayer("BYE")  # type: ignore[arg-type]
    with pytest.raises(ta.InvalidArgument):
        ta.TermLayer(b"x" * (32 * 1024 + 1))
    # Annotated ``bytes``, but (like TermCore) it takes any bytes-like object and copies it.
    assert repr(ta.TermLayer(bytearray(b"Q"))) == "TermLayer(b'Q')"
    x, y = await _pair()
    assert x.label() == "term"
    assert x.final_message == b"BYE"
    with pytest.raises(ta.InvalidArgument):
        await x.send_message(42)
    with pytest.raises(ta.NotSupported):
        await ta.term_detach(x.below)  # type: ignore[arg-type]
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(x.send_message, b"x" * 60_000)
            nursery.start_soon(x.send_message, b"x" * 60_000)
    with pytest.raises(ta.ProtocolMismatch):
        await ta.PrefixLayer(4).attach(x)  # byte framing on a message stream
    assert x.closed
    await y.aclose()
