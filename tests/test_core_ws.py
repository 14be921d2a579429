"""WSCore (sans-IO WebSocket on wsproto): handshake, frames, reassembly, limits, bad input."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import pytest
from _core_helpers import EOF, TOO_LARGE, bytewise, run, split, state_of
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA
from trio_tlsattach._cores._common import StateMachine
from trio_tlsattach._cores.ws import (
    BAD_REQUEST,
    TRANSITIONS,
    WebSocketError,
    WSCore,
    WSEvent,
    WSState,
)
from trio_tlsattach._errors import (
    ConnectionBroken,
    InvalidArgument,
    MessageTooLarge,
    SendAfterDone,
)

Message = bytes | str
CHUNKERS: list[Callable[[bytes], list[bytes]]] = [lambda b: [b], bytewise]
CHUNK_IDS = ["whole", "bytewise"]
message_strategy = st.one_of(st.binary(max_size=300), st.text(max_size=100))


def pair(**server_kwargs: object) -> tuple[WSCore, WSCore]:
    """A client and a server core that completed the upgrade handshake with each other."""
    client = WSCore(client=True, resource="/chat?x=1", host="example.org:8080")
    server = WSCore(client=False, **server_kwargs)  # type: ignore[arg-type]
    server.feed(client.start())
    assert server.accepted()
    client.feed(server.data_to_send())
    assert client.accepted()
    return client, server


def fragmented(encoder: FrameProtocol, message: Message, pieces: int) -> bytes:
    """``message`` as up to ``pieces`` frames: the first carries the type, the rest continue.

    Text is cut on bytes (a character may straddle two frames, as the RFC allows), so the
    frames are built with the encoder's own frame writer and the opcode given by hand.
    """
    data = message.encode() if isinstance(message, str) else message
    step = max(1, -(-len(data) // pieces))
    chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    first = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
    return b"".join(
        bytes(
            encoder._serialize_frame(
                Opcode.CONTINUATION if i else first, chunk, fin=i == len(chunks) - 1
            )
        )
        for i, chunk in enumerate(chunks)
    )


def collect(core: WSCore, chunks: list[bytes]) -> list[bytes | str]:
    """Feed ``chunks`` (no end of stream) and return every event; bytes that follow the peer's
    close are fed too (they become trailing data), so the end is recorded once."""
    out = run(core, chunks, eof=False)
    while out[-2:] == [EOF, EOF]:
        out.pop()
    return out


def close_frame(encoder: FrameProtocol, code: int = 1000, reason: str = "") -> bytes:
    return bytes(encoder.close(code, reason))


# -- handshake ---------------------------------------------------------------------------------


def test_handshake_reports_resource_and_host() -> None:
    client, server = pair()
    assert (server.resource, server.host) == ("/chat?x=1", "example.org:8080")
    assert (client.resource, client.host) == ("/chat?x=1", "example.org:8080")
    assert client.state is WSState.OPEN
    assert server.state is WSState.OPEN


@pytest.mark.parametrize("chunker", CHUNKERS, ids=CHUNK_IDS)
def test_handshake_any_chunking_with_frames_right_behind(
    chunker: Callable[[bytes], list[bytes]],
) -> None:
    client = WSCore(client=True)
    server = WSCore(client=False)
    pipelined = WSCore(client=True, http=False)  # frames sent before the 101 came back
    wire = client.start() + bytes(pipelined.encode("first")) + bytes(pipelined.encode(b"second"))
    assert collect(server, chunker(wire)) == ["first", b"second"]
    answer = server.data_to_send() + bytes(server.encode(b"reply"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert collect(client, chunker(answer)) == [b"reply"]
    assert client.accepted()
    assert server.data_to_send() == b""


@settings(deadline=None, max_examples=40)
@given(messages=st.lists(message_strategy, max_size=4), data=st.data())
def test_handshake_and_frames_any_chunking(messages: list[Message], data: st.DataObject) -> None:
    client = WSCore(client=True, resource="/any", host="h")
    server = WSCore(client=False)
    pipelined = WSCore(client=True, http=False)
    wire = client.start() + b"".join(bytes(pipelined.encode(m)) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    assert collect(server, split(wire, cuts)) == messages
    assert (server.resource, server.host) == ("/any", "h")
    answer = server.data_to_send() + b"".join(bytes(server.encode(m)) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(answer)), max_size=10))
    assert collect(client, split(answer, cuts)) == messages
    assert client.accepted()


def test_client_request_is_an_upgrade() -> None:
    request = WSCore(client=True, resource="/r", host="h").start()
    assert request.startswith(b"GET /r HTTP/1.1\r\nHost: h\r\n")
    assert b"Upgrade: websocket\r\n" in request
    assert b"Sec-WebSocket-Version: 13\r\n" in request
    assert WSCore(client=False).start() == b""
    assert WSCore(client=True, http=False).start() == b""


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",  # not an upgrade
        b"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",  # no key
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",  # a TLS ClientHello to a plaintext server
        b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 20000,  # an over-long header, never ended
    ],
    ids=["plain-get", "post", "no-key", "tls-hello", "over-long-header"],
)
def test_malformed_upgrade_is_eproto_and_a_400(request_bytes: bytes) -> None:
    server = WSCore(client=False)
    server.feed(request_bytes)
    with pytest.raises(WebSocketError) as info:
        server.accepted()
    assert info.value.errno == errno.EPROTO
    assert info.value.close_code is None
    assert server.data_to_send() == BAD_REQUEST
    assert server.state is WSState.FAILED
    with pytest.raises(WebSocketError):  # sticky
        server.next_message()
    server.feed(b"more")  # ignored, no second answer
    assert server.data_to_send() == b""


def _response(accept: bytes, status: bytes = b"101 Switching Protocols") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


@pytest.mark.parametrize("chunker", CHUNKERS, ids=CHUNK_IDS)
def test_wrong_accept_is_eproto(chunker: Callable[[bytes], list[bytes]]) -> None:
    client = WSCore(client=True)
    client.start()
    for chunk in chunker(_response(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")):
        client.feed(chunk)
    with pytest.raises(WebSocketError, match="accept") as info:
        client.accepted()
    assert info.value.errno == errno.EPROTO


def test_bad_frame_right_behind_the_101_fails_after_the_handshake() -> None:
    client = WSCore(client=True)
    server = WSCore(client=False)
    server.feed(client.start())
    client.feed(server.data_to_send() + bytes(server.encode(b"good")) + masked(0x82, b"bad"))
    assert client.accepted()  # the handshake itself went well
    assert client.next_message() == b"good"
    with pytest.raises(WebSocketError, match="masked"):
        client.next_message()
    client.feed_eof()
    assert client.accepted()


def test_refused_upgrade_is_eproto() -> None:
    client = WSCore(client=True)
    client.start()
    client.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!")
    with pytest.raises(WebSocketError, match="status 404"):
        client.accepted()


def test_empty_feed_is_not_the_end() -> None:
    server = WSCore(client=False)
    server.feed(b"")  # h11 alone would read b"" as the end of the stream
    server.feed(WSCore(client=True).start())
    assert server.accepted()


def test_end_during_handshake_is_connection_broken() -> None:
    server = WSCore(client=False)
    server.feed(b"GET / HTTP/1.1\r\n")
    assert not server.accepted()
    server.feed_eof()
    for _ in range(2):
        with pytest.raises(ConnectionBroken) as info:
            server.accepted()
        assert info.value.errno == errno.ECONNRESET
    assert server.state is WSState.BROKEN


def test_send_before_handshake_is_einval() -> None:
    client = WSCore(client=True)
    with pytest.raises(InvalidArgument):
        client.encode(b"early")
    with pytest.raises(InvalidArgument):
        client.close()


# -- messages ------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    messages=st.lists(st.tuples(message_strategy, st.integers(1, 5)), max_size=8),
    from_client=st.booleans(),
    after_close=st.binary(max_size=20),
    data=st.data(),
)
def test_round_trip_any_fragmentation_any_chunking(
    messages: list[tuple[Message, int]],
    from_client: bool,
    after_close: bytes,
    data: st.DataObject,
) -> None:
    sender = WSCore(client=from_client, http=False)
    encoder = FrameProtocol(from_client, [])
    wire = b"".join(fragmented(encoder, m, pieces) for m, pieces in messages)
    wire += close_frame(encoder, 1000, "done") + after_close
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    receiver = WSCore(client=not from_client, http=False)
    assert collect(receiver, split(wire, cuts)) == [*(m for m, _ in messages), EOF]
    assert (receiver.peer_status, receiver.peer_reason) == (1000, "done")
    assert receiver.trailing_data == after_close
    assert receiver.state is WSState.REMOTE_DONE
    assert sender.state is WSState.OPEN


@pytest.mark.parametrize("chunker", CHUNKERS, ids=CHUNK_IDS)
def test_whole_and_bytewise_agree(chunker: Callable[[bytes], list[bytes]]) -> None:
    client, server = pair()
    forth: list[Message] = [b"First", "Second é", b"", "", b"\x00" * 70000]
    wire = b"".join(bytes(client.encode(m)) for m in forth)
    assert run(server, chunker(wire), eof=False) == forth
    back: list[Message] = ["back", b"\xff" * 200]
    wire = b"".join(bytes(server.encode(m)) for m in back)
    assert run(client, chunker(wire), eof=False) == back


@settings(deadline=None, max_examples=60)
@given(
    messages=st.lists(st.tuples(message_strategy, st.integers(1, 4)), max_size=8),
    data=st.data(),
)
def test_oversized_messages_skipped_any_chunking(
    messages: list[tuple[Message, int]], data: st.DataObject
) -> None:
    encoder = FrameProtocol(True, [])
    wire = b"".join(fragmented(encoder, m, pieces) for m, pieces in messages)
    wire += close_frame(encoder)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))

    def size(m: Message) -> int:
        return len(m.encode()) if isinstance(m, str) else len(m)

    expected = [m if size(m) <= 10 else TOO_LARGE for m, _ in messages]
    receiver = WSCore(client=False, http=False, max_size=10)
    assert collect(receiver, split(wire, cuts)) == [*expected, EOF]


def test_oversized_message_reported_as_soon_as_it_is_too_big() -> None:
    client, server = pair(max_size=100)
    encoder = FrameProtocol(True, [])
    server.feed(bytes(encoder.send_data(b"a" * 80, fin=False)))
    assert server.next_message() is NEED_DATA
    server.feed(bytes(encoder.send_data(b"b" * 80, fin=False)))  # 160 > 100: reported now
    with pytest.raises(MessageTooLarge) as info:
        server.next_message()
    assert info.value.errno == errno.EMSGSIZE
    server.feed(bytes(encoder.send_data(b"c" * 1000, fin=True)))  # dropped as it comes
    server.feed(bytes(client.encode(b"next")))
    assert server.next_message() == b"next"
    assert server.next_message() is NEED_DATA


def test_ping_is_answered_and_pongs_counted() -> None:
    client, server = pair()
    server.feed(bytes(client.ping(b"hello")) + bytes(client.encode(b"m")))
    assert server.next_message() == b"m"
    pong = server.data_to_send()
    assert pong == b"\x8a\x05hello"  # unmasked from the server
    client.feed(pong)
    assert client.next_message() is NEED_DATA
    assert client.pongs_received == 1
    with pytest.raises(InvalidArgument):
        client.ping(b"x" * 126)


def test_no_pong_after_our_close() -> None:
    client, server = pair()
    server.close()
    server.feed(bytes(client.ping(b"late")))
    assert server.next_message() is NEED_DATA
    assert server.data_to_send() == b""


def test_text_from_bytes_must_be_utf8() -> None:
    client, server = pair()
    server.feed(bytes(client.encode("é".encode(), text=True)))
    assert server.next_message() == "é"
    with pytest.raises(InvalidArgument):
        client.encode(b"\xff", text=True)
    with pytest.raises(InvalidArgument):
        client.encode(42)  # type: ignore[arg-type]


# -- bad input -----------------------------------------------------------------------------------

MASK = b"\x01\x02\x03\x04"


def masked(first: int, payload: bytes) -> bytes:
    """A client frame (masked) with the given first byte."""
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([first, 0x80 | len(payload)]) + MASK + body


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"\x82\x02hi", 1002),  # unmasked frame to a server
        (masked(0xC2, b"hi"), 1002),  # RSV1 set, no extension agreed
        (masked(0xA2, b"hi"), 1002),  # RSV2
        (masked(0x83, b"hi"), 1002),  # reserved opcode 3
        (masked(0x09, b"hi"), 1002),  # a fragmented ping
        (masked(0x81, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (masked(0x88, struct.pack("!H", 999)), 1002),  # close code out of range
        (masked(0x88, b"\x03"), 1002),  # one-byte close payload
        (masked(0x80, b"x"), 1002),  # continuation with nothing to continue
    ],
    ids=[
        "unmasked",
        "rsv1",
        "rsv2",
        "opcode",
        "fragmented-ping",
        "bad-utf8",
        "close-code",
        "close-1-byte",
        "lone-continuation",
    ],
)
@pytest.mark.parametrize("chunker", CHUNKERS, ids=CHUNK_IDS)
def test_bad_frames_are_eproto_after_what_came_before(
    bad: bytes, code: int, chunker: Callable[[bytes], list[bytes]]
) -> None:
    client, server = pair()
    good = bytes(client.encode(b"before")) + bytes(client.encode("also before"))
    for chunk in chunker(good + bad + bytes(client.encode(b"after"))):
        server.feed(chunk)
    assert server.next_message() == b"before"
    assert server.next_message() == "also before"
    for _ in range(2):  # sticky
        with pytest.raises(WebSocketError) as info:
            server.next_message()
        assert info.value.errno == errno.EPROTO
        assert info.value.close_code == code
    assert server.state is WSState.FAILED
    answer = server.data_to_send()  # the close frame that fails the connection
    assert answer[:4] == b"\x88" + bytes([len(answer) - 2]) + struct.pack("!H", code)
    with pytest.raises(WebSocketError):
        server.encode(b"no more")


def test_masked_frame_to_a_client_is_eproto() -> None:
    client, _ = pair()
    client.feed(masked(0x82, b"hi"))
    with pytest.raises(WebSocketError, match="masked"):
        client.next_message()


# -- close, states, end of stream ----------------------------------------------------------------


def test_close_handshake_and_half_close() -> None:
    client, server = pair()
    server.feed(bytes(client.close(1000, "OK")))
    assert client.state is WSState.LOCAL_DONE
    with pytest.raises(SendAfterDone) as info:
        client.encode(b"late")
    assert info.value.errno == errno.EPIPE
    assert client.close(1001, "again") == b""  # the close went already
    assert server.next_message() is END_OF_STREAM
    assert (server.peer_status, server.peer_reason) == (1000, "OK")
    assert state_of(server) is WSState.REMOTE_DONE
    # libdill's half-close: the server may still send before its own close.
    client.feed(bytes(server.encode(b"still talking")) + bytes(server.close(1000, "bye")))
    assert client.next_message() == b"still talking"
    assert client.next_message() is END_OF_STREAM
    assert (client.peer_status, client.peer_reason) == (1000, "bye")
    assert state_of(client) is WSState.CLOSED
    assert state_of(server) is WSState.CLOSED
    client.feed_eof()  # the end after both closes is normal
    assert client.next_message() is END_OF_STREAM


def test_close_without_status_reads_1005() -> None:
    _, server = pair()
    server.feed(masked(0x88, b""))
    assert server.next_message() is END_OF_STREAM
    assert server.peer_status == 1005


@pytest.mark.parametrize("chunker", CHUNKERS, ids=CHUNK_IDS)
def test_trailing_data_is_everything_after_the_close(
    chunker: Callable[[bytes], list[bytes]],
) -> None:
    client, server = pair()
    wire = bytes(client.encode(b"m")) + bytes(client.close()) + b"raw \x82\x00 bytes"
    for chunk in chunker(wire[:-3]):
        server.feed(chunk)
    server.feed(wire[-3:])
    assert server.pending_messages == [b"m"]
    assert server.trailing_data == b"raw \x82\x00 bytes"  # pins wsproto's buffer layout
    assert server.next_message() == b"m"
    assert server.next_message() is END_OF_STREAM
    assert server.pending_messages == []


def test_end_without_close_is_sticky_connection_broken() -> None:
    client, server = pair()
    server.feed(bytes(client.encode(b"last"))[:-1])
    server.feed_eof()
    server.feed_eof()  # harmless
    for _ in range(2):
        with pytest.raises(ConnectionBroken, match="without a WebSocket close"):
            server.next_message()
    assert server.state is WSState.BROKEN
    with pytest.raises(InvalidArgument):
        server.feed(b"x")
    with pytest.raises(ConnectionBroken):
        server.encode(b"x")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        *[(code, "") for code in (999, 5000, 1005, 1006, 1015, 2000, True, "1000")],
        *[(1000, "x" * 124), (1000, b"bytes")],
    ],
)
def test_bad_close_arguments(status: object, reason: object) -> None:
    client, _ = pair()
    with pytest.raises(InvalidArgument) as info:
        client.close(status, reason)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
    assert client.state is WSState.OPEN
    assert client.close(4999, "é" * 61)  # 122 bytes of reason: fine


def test_impossible_transition_is_refused() -> None:
    machine = StateMachine(TRANSITIONS, WSState.HANDSHAKE)
    with pytest.raises(InvalidArgument, match="CLOSE_SENT in state HANDSHAKE"):
        machine.fire(WSEvent.CLOSE_SENT)
    assert machine.fire(WSEvent.ACCEPTED) is WSState.OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client": 1},
        {"client": True, "http": None},
        {"client": True, "resource": "no-slash"},
        {"client": True, "resource": "/with space"},
        {"client": True, "host": "bad\nhost"},
        {"client": True, "host": 7},
        {"client": True, "max_size": 0},
        {"client": True, "max_size": 1.5},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as info:
        WSCore(**kwargs)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


def test_repr_and_feed_checks() -> None:
    core = WSCore(client=False, http=False)
    assert repr(core) == "<WSCore server state=OPEN queued=0>"
    assert core.max_size == 1 << 20
    assert not core.client
    with pytest.raises(InvalidArgument):
        core.feed("text")  # type: ignore[arg-type]
