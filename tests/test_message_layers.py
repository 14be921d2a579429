"""What every message layer promises about a message cut short: one table, every cut.

A message cut by a receive deadline is kept (the next receive completes it); a message cut by
the peer's EOF breaks receiving for good. Each layer gives its wire encoding of one message, and
each test cuts that encoding at every offset (h11's "feed it one byte at a time" idea), so the
header, the body and a split delimiter are all covered.
"""

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

import trio_tlsattach as ta


@dataclass(frozen=True)
class Layer:
    attach: Callable[[Any], Awaitable[Any]]  # onto a byte stream; returns the message stream
    wire: bytes  # how this layer sends MESSAGE


MESSAGE = b"hello"


async def _term_over_prefix(stream: Any) -> ta.TermStream:
    return await ta.term_attach(await ta.PrefixLayer(2).attach(stream), b"BYE")


LAYERS = {
    "prefix 4": Layer(ta.PrefixLayer(4).attach, b"\x00\x00\x00\x05" + MESSAGE),
    "prefix 3 little-endian": Layer(
        ta.PrefixLayer(3, big_endian=False).attach, b"\x05\x00\x00" + MESSAGE
    ),
    "crlf": Layer(ta.CRLFLayer().attach, MESSAGE + b"\r\n"),
    "suffix": Layer(ta.SuffixLayer(b"<END>").attach, MESSAGE + b"<END>"),
    "term over prefix": Layer(_term_over_prefix, b"\x00\x05" + MESSAGE),
}


@pytest.mark.parametrize("name", list(LAYERS))
async def test_a_deadline_keeps_the_part_received(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    layer = LAYERS[name]
    for cut in range(len(layer.wire)):  # 0: nothing has come yet
        a, b = ta.socketpair()
        msgs = await layer.attach(a)
        await b.send_all(layer.wire[:cut])
        start = trio.current_time()
        with pytest.raises(ta.DeadlineExceeded) as info:
            await msgs.receive_message(ta.after(2))
        assert info.value.errno == errno.ETIMEDOUT
        assert trio.current_time() - start == pytest.approx(2)
        await b.send_all(layer.wire[cut:] + layer.wire)
        assert await msgs.receive_message() == MESSAGE, f"cut at {cut}"
        assert await msgs.receive_message() == MESSAGE  # and the stream is in step after it
        await msgs.aclose()
        await b.aclose()


@pytest.mark.parametrize("name", list(LAYERS))
async def test_eof_inside_a_message_breaks_receiving_for_good(name: str) -> None:
    layer = LAYERS[name]
    for cut in range(1, len(layer.wire)):
        a, b = ta.socketpair()
        msgs = await layer.attach(a)
        await b.send_all(layer.wire + layer.wire[:cut])
        await b.send_eof()
        assert await msgs.receive_message() == MESSAGE  # what came whole is delivered
        for _ in range(2):  # and the error stays
            with pytest.raises(ta.ConnectionBroken) as info:
                await msgs.receive_message()
            assert info.value.errno == errno.ECONNRESET, f"cut at {cut}"
        await msgs.aclose()
        await b.aclose()
