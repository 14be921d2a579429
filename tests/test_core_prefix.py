"""PrefixCore (sans-IO length-prefix framing), plus the shared pieces of ``_cores._common``."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from _core_helpers import EOF, TOO_LARGE, bytewise, run, split, state_of
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA, PrefixCore
from trio_tlsattach._cores._common import (
    DEFAULT_MAX_SIZE,
    FrameEvent,
    FrameState,
    ReceiveBuffer,
    StateMachine,
)
from trio_tlsattach._cores.prefix import TRANSITIONS
from trio_tlsattach._errors import ConnectionBroken, InvalidArgument, MessageTooLarge

# -- wire format -------------------------------------------------------------------------------


def test_wire_format_example() -> None:
    assert PrefixCore(3, big_endian=False).encode(b"First") == b"\x05\x00\x00First"
    assert PrefixCore(3).encode(b"First") == b"\x00\x00\x05First"
    assert PrefixCore(2).encode(b"") == b"\x00\x00"


@pytest.mark.parametrize("hdrlen", range(1, 9))
@pytest.mark.parametrize("big_endian", [True, False])
def test_wire_format_every_hdrlen(hdrlen: int, big_endian: bool) -> None:
    core = PrefixCore(hdrlen, big_endian=big_endian)
    payload = bytes(range(200)) + b"xyz"
    header = len(payload).to_bytes(hdrlen, "big" if big_endian else "little")
    wire = core.encode(payload)
    assert wire == header + payload
    assert core.hdrlen == hdrlen
    assert core.big_endian is big_endian
    assert run(core, [wire + wire]) == [payload, payload, EOF]


def test_encode_accepts_bytes_like() -> None:
    core = PrefixCore(1)
    assert core.encode(bytearray(b"ab")) == b"\x02ab"
    assert core.encode(memoryview(b"xabx")[1:3]) == b"\x02ab"
    with pytest.raises(InvalidArgument):
        core.encode("ab")  # type: ignore[arg-type]


@pytest.mark.parametrize(("hdrlen", "fits"), [(1, 255), (2, 65535)])
def test_encode_length_must_fit_header(hdrlen: int, fits: int) -> None:
    core = PrefixCore(hdrlen, max_size=1)  # max_size is the receiver's limit only
    assert len(core.encode(b"x" * fits)) == hdrlen + fits
    with pytest.raises(MessageTooLarge) as info:
        core.encode(b"x" * (fits + 1))
    assert info.value.errno == errno.EMSGSIZE


# -- receiving ---------------------------------------------------------------------------------


def test_whole_and_bytewise_agree() -> None:
    core = PrefixCore(4)
    messages = [b"First", b"", b"Second", b"\x00" * 300]
    wire = b"".join(core.encode(m) for m in messages)
    assert run(PrefixCore(4), [wire]) == [*messages, EOF]
    assert run(PrefixCore(4), bytewise(wire)) == [*messages, EOF]


@settings(deadline=None, max_examples=60)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=8),
    hdrlen=st.integers(2, 8),
    big_endian=st.booleans(),
    data=st.data(),
)
def test_round_trip_any_chunking(
    messages: list[bytes], hdrlen: int, big_endian: bool, data: st.DataObject
) -> None:
    sender = PrefixCore(hdrlen, big_endian=big_endian)
    wire = b"".join(sender.encode(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    receiver = PrefixCore(hdrlen, big_endian=big_endian)
    assert run(receiver, split(wire, cuts)) == [*messages, EOF]
    assert receiver.trailing_data == b""
    assert receiver.state is FrameState.EOF


@settings(deadline=None, max_examples=60)
@given(messages=st.lists(st.binary(max_size=40), max_size=8), data=st.data())
def test_oversized_messages_skipped_any_chunking(
    messages: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(PrefixCore(2).encode(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    expected = [m if len(m) <= 10 else TOO_LARGE for m in messages]
    assert run(PrefixCore(2, max_size=10), split(wire, cuts)) == [*expected, EOF]


@pytest.mark.parametrize("chunker", [lambda b: [b], bytewise], ids=["whole", "bytewise"])
def test_oversized_message_skipped(chunker: Callable[[bytes], list[bytes]]) -> None:
    sender = PrefixCore(4)
    wire = b"".join(sender.encode(m) for m in [b"a" * 10, b"b" * 11, b"c", b"d" * 5000, b""])
    assert run(PrefixCore(4, max_size=10), chunker(wire)) == [
        b"a" * 10,
        TOO_LARGE,
        b"c",
        TOO_LARGE,
        b"",
        EOF,
    ]


def test_skipping_discards_as_it_is_fed() -> None:
    core = PrefixCore(4, max_size=100)
    core.feed(b"\x00\x00\x10\x00" + b"x" * 10)  # announces 4096 bytes
    with pytest.raises(MessageTooLarge) as info:
        core.next_message()
    assert info.value.errno == errno.EMSGSIZE
    assert state_of(core) is FrameState.SKIPPING
    for _ in range(40):
        core.feed(b"x" * 100)
        assert core.pending == 0
    core.feed(b"x" * 86 + PrefixCore(4).encode(b"next"))
    assert state_of(core) is FrameState.HEADER
    assert core.next_message() == b"next"
    assert core.next_message() is NEED_DATA


def test_states() -> None:
    core = PrefixCore(2)
    assert state_of(core) is FrameState.HEADER
    assert core.next_message() is NEED_DATA
    core.feed(b"\x00\x03a")
    assert core.next_message() is NEED_DATA
    assert state_of(core) is FrameState.PAYLOAD
    core.feed(b"bc")
    assert core.next_message() == b"abc"
    assert state_of(core) is FrameState.HEADER
    core.feed_eof()
    assert core.next_message() is END_OF_STREAM
    assert state_of(core) is FrameState.EOF


def test_eof_at_boundary_is_sticky() -> None:
    core = PrefixCore(1)
    core.feed(b"\x01a")
    core.feed_eof()
    core.feed_eof()  # harmless
    assert core.next_message() == b"a"
    for _ in range(3):
        assert core.next_message() is END_OF_STREAM
    with pytest.raises(InvalidArgument):
        core.feed(b"\x00")


@pytest.mark.parametrize(
    ("wire", "max_size"),
    [(b"\x00", 100), (b"\x00\x05abc", 100), (b"\x00\x05", 100), (b"\x00\xff" + b"x" * 9, 3)],
    ids=["partial-header", "partial-payload", "header-only", "while-skipping"],
)
def test_eof_inside_message_is_sticky_connection_broken(wire: bytes, max_size: int) -> None:
    core = PrefixCore(2, max_size=max_size)
    core.feed(wire)
    core.feed_eof()
    if max_size == 3:
        with pytest.raises(MessageTooLarge):
            core.next_message()
    for _ in range(3):
        with pytest.raises(ConnectionBroken, match="stream ended inside a message") as info:
            core.next_message()
        assert info.value.errno == errno.ECONNRESET
    assert core.state is FrameState.BROKEN


def test_trailing_data_is_the_rest_of_the_stream() -> None:
    sender = PrefixCore(2)
    rest = sender.encode(b"two") + sender.encode(b"three")[:4]
    core = PrefixCore(2)
    core.feed(sender.encode(b"one") + rest)
    assert core.next_message() == b"one"
    assert core.trailing_data == rest
    assert core.pending == len(rest)
    assert core.next_message() == b"two"
    assert core.next_message() is NEED_DATA
    assert core.state is FrameState.PAYLOAD
    assert core.trailing_data == b"\x00\x05th"  # the header stays until the payload is whole


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hdrlen": 0},
        {"hdrlen": 9},
        {"hdrlen": -1},
        {"hdrlen": True},
        {"hdrlen": 4.0},
        {"hdrlen": "4"},
        {"hdrlen": 4, "big_endian": 1},
        {"hdrlen": 4, "big_endian": None},
        {"hdrlen": 4, "max_size": 0},
        {"hdrlen": 4, "max_size": -5},
        {"hdrlen": 4, "max_size": True},
        {"hdrlen": 4, "max_size": 1.5},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as info:
        PrefixCore(**kwargs)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


def test_defaults_and_repr() -> None:
    core = PrefixCore(4)
    assert core.max_size == DEFAULT_MAX_SIZE == 1 << 20
    assert core.big_endian is True
    assert repr(core) == "<PrefixCore hdrlen=4 big-endian state=HEADER pending=0>"
    with pytest.raises(InvalidArgument):
        core.feed("text")  # type: ignore[arg-type]


# -- shared pieces (_cores._common) ------------------------------------------------------------


def test_sentinels() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(END_OF_STREAM) == "END_OF_STREAM"


def test_impossible_transition_is_refused() -> None:
    machine = StateMachine(TRANSITIONS, FrameState.HEADER)
    with pytest.raises(InvalidArgument, match="SKIPPED in state HEADER"):
        machine.fire(FrameEvent.SKIPPED)
    assert machine.state is FrameState.HEADER
    assert machine.fire(FrameEvent.HEADER_READ) is FrameState.PAYLOAD


def test_receive_buffer_compacts_lazily() -> None:
    buffer = ReceiveBuffer()
    for i in range(1000):
        buffer.append(bytes([i % 256]))
        if i % 2:
            assert buffer.take(1) == bytes([(i // 2) % 256])
        assert len(buffer._data) <= 2 * len(buffer) + 2  # consumed space does not pile up
    assert len(buffer) == 500
    assert buffer.peek(2) == bytes([500 % 256, 501 % 256])
    assert buffer.find(b"\x00\x01", 0) == 12  # byte 512 of the stream
    assert buffer.find(b"\x00\x01", 13) == 268
    assert buffer.find(b"\x00\x01", 13, 269) == -1
    buffer.discard(len(buffer))
    assert len(buffer) == 0
    assert buffer.peek() == b""
