"""SuffixCore (sans-IO delimiter framing)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable

import pytest
from _core_helpers import EOF, TOO_LARGE, bytewise, drain, run, split, state_of
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA, SuffixCore
from trio_tlsattach._cores._common import DEFAULT_MAX_SIZE, FrameState
from trio_tlsattach._errors import ConnectionBroken, InvalidArgument, MessageTooLarge

TEN = b"&$\n\r\n\t\n\r-!"  # a 10-byte delimiter, as in libdill's tests
DELIMITERS = [b"\r\n", b"\n", b"a", b"aa", b"aba", b"abab", b"\r\n\r\n", TEN]


def encodable(core: SuffixCore, message: bytes) -> bool:
    try:
        core.encode(message)
    except InvalidArgument:
        return False
    return True


_ALPHABET = bytes(b"ab\r\n-"[i % 5] for i in range(256))  # delimiters show up often
messages_strategy = st.lists(st.binary(max_size=30).map(lambda b: b.translate(_ALPHABET)))


# -- wire format -------------------------------------------------------------------------------


def test_wire_format() -> None:
    assert SuffixCore(b"\r\n").encode(b"hello") == b"hello\r\n"
    assert SuffixCore(b"\r\n").encode(b"") == b"\r\n"
    assert SuffixCore(TEN).encode(b"First") == b"First" + TEN
    assert SuffixCore(bytearray(b"\n")).encode(memoryview(b"ab")) == b"ab\n"


@pytest.mark.parametrize("delimiter", [b"\r\n", TEN])
@pytest.mark.parametrize("chunker", [lambda b: [b], bytewise], ids=["whole", "bytewise"])
def test_libdill_sequence(delimiter: bytes, chunker: Callable[[bytes], list[bytes]]) -> None:
    sender = SuffixCore(delimiter)
    messages = [b"First", b"Second", b"", b"Third"]
    wire = b"".join(sender.encode(m) for m in messages)
    assert run(SuffixCore(delimiter), chunker(wire)) == [*messages, EOF]


@pytest.mark.parametrize(
    ("delimiter", "message"),
    [
        (b"\r\n", b"a\r\nb"),
        (b"\r\n", b"\r\n"),
        (b"aa", b"a"),
        (b"aa", b"baa"),
        (b"\r\n\r\n", b"x\r\n"),
        (b"aba", b"ab"),
        (b"aba", b"xab"),
        (TEN, b"x" + TEN + b"y"),
    ],
)
def test_encode_refuses_what_would_not_round_trip(delimiter: bytes, message: bytes) -> None:
    with pytest.raises(InvalidArgument) as info:
        SuffixCore(delimiter).encode(message)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("delimiter", "message"),
    [
        (b"\r\n", b"tail\r"),
        (b"\r\n", b"\n"),
        (b"\r\n\r\n", b"\r"),
        (b"\r\n\r\n", b"\r\n\r"),
        (b"aa", b"b"),
        (b"aba", b"a"),
        (TEN, b"x" + TEN[:5]),
    ],
)
def test_encode_accepts_near_misses(delimiter: bytes, message: bytes) -> None:
    wire = SuffixCore(delimiter).encode(message)
    assert run(SuffixCore(delimiter), [wire]) == [message, EOF]


@settings(deadline=None, max_examples=150)
@given(delimiter=st.sampled_from(DELIMITERS), message=messages_strategy.map(b"".join))
def test_encode_refuses_exactly_the_messages_that_would_be_cut(
    delimiter: bytes, message: bytes
) -> None:
    received: list[bytes | str] = []
    receiver = SuffixCore(delimiter)
    receiver.feed(message + delimiter)
    receiver.feed_eof()
    with contextlib.suppress(ConnectionBroken):  # the cut left half a message behind
        drain(receiver, received)
    if encodable(SuffixCore(delimiter), message):
        assert received == [message, EOF]
    else:
        assert received[0] != message


# -- receiving ---------------------------------------------------------------------------------


@settings(deadline=None, max_examples=80)
@given(delimiter=st.sampled_from(DELIMITERS), messages=messages_strategy, data=st.data())
def test_round_trip_any_chunking(
    delimiter: bytes, messages: list[bytes], data: st.DataObject
) -> None:
    sender = SuffixCore(delimiter)
    messages = [m for m in messages if encodable(sender, m)]
    wire = b"".join(sender.encode(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    receiver = SuffixCore(delimiter)
    assert run(receiver, split(wire, cuts)) == [*messages, EOF]
    assert receiver.state is FrameState.EOF


@settings(deadline=None, max_examples=80)
@given(delimiter=st.sampled_from(DELIMITERS), messages=messages_strategy, data=st.data())
def test_oversized_skipped_any_chunking(
    delimiter: bytes, messages: list[bytes], data: st.DataObject
) -> None:
    sender = SuffixCore(delimiter)
    messages = [m for m in messages if encodable(sender, m)]
    wire = b"".join(sender.encode(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    expected = [m if len(m) <= 6 else TOO_LARGE for m in messages]
    assert run(SuffixCore(delimiter, max_size=6), split(wire, cuts)) == [*expected, EOF]


@pytest.mark.parametrize("chunker", [lambda b: [b], bytewise], ids=["whole", "bytewise"])
@pytest.mark.parametrize("delimiter", [b"\r\n", b"aa", TEN])
def test_oversized_message_skipped(
    delimiter: bytes, chunker: Callable[[bytes], list[bytes]]
) -> None:
    messages = [b"x" * 10, b"y" * 11, b"z", b"w" * 5000, b""]
    wire = b"".join(SuffixCore(delimiter).encode(m) for m in messages)
    got = run(SuffixCore(delimiter, max_size=10), chunker(wire))
    assert got == [b"x" * 10, TOO_LARGE, b"z", TOO_LARGE, b"", EOF]


def test_buffer_stays_bounded_while_skipping() -> None:
    core = SuffixCore(TEN, max_size=100)
    core.feed(b"x" * 150)
    with pytest.raises(MessageTooLarge) as info:
        core.next_message()
    assert info.value.errno == errno.EMSGSIZE
    assert state_of(core) is FrameState.SKIPPING
    for _ in range(50):
        core.feed(b"y" * 1000)
        assert core.pending <= len(TEN) - 1
        assert core.next_message() is NEED_DATA
    core.feed(TEN[:4])  # a delimiter split across feeds ends the skip
    core.feed(TEN[4:] + b"next" + TEN[:9])
    assert state_of(core) is FrameState.SCANNING
    core.feed(TEN[9:])
    assert core.next_message() == b"next"


def test_delimiter_split_across_feeds_and_search_resumes() -> None:
    core = SuffixCore(TEN)
    stream = b"0123456789abcdef" + TEN
    for i, byte in enumerate(bytewise(stream)[:-1]):
        core.feed(byte)
        assert core.next_message() is NEED_DATA
        assert core._search_from == max(0, i + 1 - len(TEN) + 1)  # never rescans from 0
    core.feed(stream[-1:])
    assert core.next_message() == b"0123456789abcdef"


def test_eof_at_boundary_is_sticky() -> None:
    core = SuffixCore(b"\n")
    core.feed(b"a\n")
    core.feed_eof()
    assert core.next_message() == b"a"
    assert core.next_message() is END_OF_STREAM
    assert core.next_message() is END_OF_STREAM
    assert core.state is FrameState.EOF
    with pytest.raises(InvalidArgument):
        core.feed(b"b\n")


@pytest.mark.parametrize("wire", [b"a\nhalf", b"a\r", b"x" * 20])
def test_eof_inside_message_is_sticky_connection_broken(wire: bytes) -> None:
    core = SuffixCore(b"\r\n", max_size=10)
    core.feed(wire)
    core.feed_eof()
    out: list[bytes | str] = []
    with pytest.raises(ConnectionBroken, match="stream ended inside a message") as info:
        drain(core, out)
    assert info.value.errno == errno.ECONNRESET
    assert out in ([b"a"], [], [TOO_LARGE])
    for _ in range(3):
        with pytest.raises(ConnectionBroken):
            core.next_message()
    assert core.state is FrameState.BROKEN


def test_trailing_data() -> None:
    core = SuffixCore(b"\r\n")
    core.feed(b"one\r\ntwo\r\nthr")
    assert core.next_message() == b"one"
    assert core.trailing_data == b"two\r\nthr"
    assert core.pending == 8
    assert core.next_message() == b"two"
    assert core.next_message() is NEED_DATA
    assert core.trailing_data == b"thr"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delimiter": b""},
        {"delimiter": b"x" * 33},
        {"delimiter": "\r\n"},
        {"delimiter": None},
        {"delimiter": 10},
        {"delimiter": b"\n", "max_size": 0},
        {"delimiter": b"\n", "max_size": False},
        {"delimiter": b"\n", "max_size": "10"},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as info:
        SuffixCore(**kwargs)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


def test_properties_and_repr() -> None:
    core = SuffixCore(bytearray(b"x" * 32))
    assert core.delimiter == b"x" * 32
    assert type(core.delimiter) is bytes
    assert core.max_size == DEFAULT_MAX_SIZE
    assert repr(SuffixCore(b"\r\n")) == r"<SuffixCore b'\r\n' state=SCANNING pending=0>"
