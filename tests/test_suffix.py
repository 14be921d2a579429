"""The suffix layer: delimiters of 1-32 bytes, split delimiters, limits, CRLF."""

import errno

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both, check_layer

TEN = b"&-=#@!%*+~"  # a 10-byte delimiter, as libdill's tests use one


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(transport: str) -> None:
    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        layer = ta.SuffixLayer(TEN)
        return await attach_both(a, b, layer.attach, layer.attach)

    await check_layer(attach_pair, transport_pair=transport)


async def test_wire_format_and_split_delimiter() -> None:
    a, b = ta.socketpair()
    msgs = await ta.SuffixLayer(TEN).attach(a)
    await msgs.send_message(b"First")
    assert await b.receive_some(100) == b"First" + TEN
    received = []

    async def reader() -> None:
        received.append(await msgs.receive_message())
        received.append(await msgs.receive_message())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for byte in b"Second" + TEN + b"Third" + TEN:  # one byte at a time
            await b.send_all(bytes([byte]))
            await trio.testing.wait_all_tasks_blocked()
    assert received == [b"Second", b"Third"]
    await msgs.aclose()
    await b.aclose()


async def test_crlf_layer() -> None:
    a, b = ta.socketpair()
    lines = await ta.CRLFLayer().attach(a)
    assert lines.label() == "crlf"
    await b.send_all(b"EHLO x\r\nQUIT\r\n")
    assert [await lines.receive_message(), await lines.receive_message()] == [b"EHLO x", b"QUIT"]
    with pytest.raises(ta.InvalidArgument):
        await lines.send_message(b"two\r\nlines")
    await lines.aclose()
    await b.aclose()


async def test_oversized_without_delimiter_is_emsgsize_then_usable() -> None:
    a, b = ta.socketpair()
    msgs = await ta.SuffixLayer(b"\n", max_size=8).attach(a)
    await b.send_all(b"x" * 50 + b"\nnext\n")
    with pytest.raises(ta.MessageTooLarge) as info:
        await msgs.receive_message()
    assert info.value.errno == errno.EMSGSIZE
    assert await msgs.receive_message() == b"next"
    await msgs.aclose()
    await b.aclose()


@pytest.mark.parametrize("bad", [b"", b"x" * 33, "\n", 10])
def test_bad_delimiters(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        ta.SuffixLayer(bad)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


async def test_facade() -> None:
    a, b = ta.socketpair()
    msgs = await ta.suffix_attach(a, b"\0")
    await ta.msend(msgs, b"z")
    assert await b.receive_some() == b"z\0"
    assert await ta.suffix_detach(msgs) is a
    await a.aclose()
    await b.aclose()


async def test_send_after_send_eof_and_bad_messages() -> None:
    a, b = ta.socketpair()
    msgs = await ta.SuffixLayer(TEN).attach(a)
    with pytest.raises(ta.InvalidArgument) as info:
        await msgs.send_message(b"in" + TEN + b"side")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ta.InvalidArgument):
        await msgs.send_message("text")
    await msgs.send_message(bytearray(b"ok"))
    await msgs.send_eof()
    await msgs.send_eof()  # again: nothing more happens (Trio's rule)
    with pytest.raises(ta.SendAfterDone) as info2:
        await msgs.send_message(b"late")
    assert info2.value.errno == errno.EPIPE
    assert await b.receive_some(100) == b"ok" + TEN
    assert await b.receive_some(100) == b""  # the byte stream below was half-closed
    await b.send_all(b"still receiving" + TEN)
    assert await msgs.receive_message() == b"still receiving"
    await msgs.aclose()
    await b.aclose()


async def test_old_handle_is_ebadf_while_attached() -> None:
    a, b = ta.socketpair()
    msgs = await ta.SuffixLayer(b"\n").attach(a)
    with pytest.raises(ta.BadHandle) as info:
        await a.receive_some(1)
    assert info.value.errno == errno.EBADF
    raw = await msgs.detach()
    assert raw is a
    await raw.send_all(b"usable again")  # the user's again after detach
    with pytest.raises(ta.BadHandle):
        await msgs.send_message(b"x")  # the detached layer is dead
    assert await b.receive_some(100) == b"usable again"
    await raw.aclose()
    await b.aclose()


async def test_detach_pushes_back_the_bytes_after_the_last_line() -> None:
    a, b = ta.socketpair()
    lines = await ta.CRLFLayer().attach(a)
    await b.send_all(b"STARTTLS\r\n\x16\x03\x01binary")
    await trio.testing.wait_all_tasks_blocked()
    assert await lines.receive_message() == b"STARTTLS"
    raw = await ta.suffix_detach(lines)
    assert await raw.receive_some(100) == b"\x16\x03\x01binary"
    await raw.aclose()
    await b.aclose()


async def test_labels_and_reprs() -> None:
    assert repr(ta.CRLFLayer()) == "CRLFLayer(max_size=1048576)"
    assert ta.CRLFLayer().delimiter == b"\r\n"
    assert repr(ta.SuffixLayer(b";", max_size=9)) == "SuffixLayer(b';', max_size=9)"
    a, b = ta.socketpair()
    stack = ta.ProtocolStack(a)
    await stack.push(ta.SuffixLayer(b"\r\n"))
    assert repr(stack).endswith(" > suffix(b'\\r\\n')>")
    await stack.aclose()
    await b.aclose()
