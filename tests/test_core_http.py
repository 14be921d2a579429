"""HTTPCore (sans-IO HTTP heads on h11): the send side's lines and order, the receive side fed
whole, one byte at a time and cut anywhere, limits, malformed heads, and what is left over."""

from __future__ import annotations

import errno
import pickle

import pytest
from _core_helpers import CHUNKERS, Chunker, split
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA
from trio_tlsattach._cores.http import (
    Head,
    HeaderTooLarge,
    HeadKind,
    HTTPCore,
    HTTPHeadError,
    HTTPProtocolError,
    PeerDone,
    ReceiveState,
    RequestLine,
    SendState,
    StatusLine,
)
from trio_tlsattach._errors import ConnectionBroken, InvalidArgument, SendAfterDone, StackError

REQUEST = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.org\r\nX-Long:  a b  \r\n\r\n"


def receive(
    chunks: list[bytes], kind: HeadKind = HeadKind.AUTO, *, eof: bool = False, **limits: int
) -> tuple[HTTPCore, Head | StackError | object, bytes]:
    """Feed ``chunks`` until the head is whole or an error; return the core, the result (the
    head, the error, or END_OF_STREAM/NEED_DATA) and every byte not part of the head."""
    core = HTTPCore(**limits)
    result: Head | StackError | object = NEED_DATA
    rest: list[bytes] = []
    for i, chunk in enumerate(chunks):
        core.feed(chunk)
        try:
            result = core.next_head(kind)
        except StackError as exc:
            return core, exc, core.trailing_data + b"".join(chunks[i + 1 :])
        if result is not NEED_DATA:
            rest = chunks[i + 1 :]
            break
    else:
        if eof:
            core.feed_eof()
            try:
                result = core.next_head(kind)
            except StackError as exc:
                return core, exc, core.trailing_data
    return core, result, core.trailing_data + b"".join(rest)


# -- the send side -------------------------------------------------------------------------------


def test_request_head_on_the_wire() -> None:
    core = HTTPCore()
    wire = core.send_request("GET", "/index.html?q=1")
    wire += core.send_field("Host", "example.org")
    wire += core.send_field(b"X-Long", "  a b  ")  # spaces around a value go, as in libdill
    wire += core.send_done()
    assert wire == REQUEST.replace(b":  a b  ", b": a b")
    assert core.send_state is SendState.BODY
    core.check_body()  # the body may follow


def test_status_head_on_the_wire() -> None:
    core = HTTPCore()
    assert core.send_status(404, "Not Found") == b"HTTP/1.1 404 Not Found\r\n"
    assert core.send_field("Content-Length", "0") == b"Content-Length: 0\r\n"
    assert core.send_field("X-Empty", "") == b"X-Empty: \r\n"  # RFC 7230 allows it
    assert core.send_field("X-Latin", "caf\xe9") == b"X-Latin: caf\xe9\r\n"
    assert core.send_done() == b"\r\n"
    assert HTTPCore().send_status(101, "") == b"HTTP/1.1 101 \r\n"


@pytest.mark.parametrize(
    ("command", "resource"),
    [
        ("G T", "/"),
        ("GET", "/a b"),
        ("GET", "/a\nb"),
        ("", "/"),
        ("GET", ""),
        ("GE:T", "/"),
        ("GET", "/\u20ac"),
        (1, "/"),
    ],
)
def test_bad_request_line_is_einval(command: object, resource: object) -> None:
    core = HTTPCore()
    with pytest.raises(InvalidArgument) as info:
        core.send_request(command, resource)
    assert info.value.errno == errno.EINVAL
    assert core.send_state is SendState.START  # nothing happened
    assert core.send_request("GET", "/")  # still usable


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (99, "x"),
        (600, "x"),
        (True, "x"),
        ("200", "OK"),
        (200, "a\r\nb"),
        (200, "a\x00b"),
        (200, "\u20ac"),
    ],
)
def test_bad_status_line_is_einval(code: object, reason: object) -> None:
    with pytest.raises(InvalidArgument):
        HTTPCore().send_status(code, reason)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Na:me", "v"),
        ("Na me", "v"),
        ("", "v"),
        ("N\r\n", "v"),
        ("N", "a\r\nX: y"),
        ("N", "a\nb"),
        ("N", "a\x00"),
        ("N(", "v"),
        ("N", b"a\rb"),
    ],
)
def test_bad_field_is_einval(name: object, value: object) -> None:
    core = HTTPCore()
    core.send_request("GET", "/")
    with pytest.raises(InvalidArgument) as info:
        core.send_field(name, value)
    assert info.value.errno == errno.EINVAL
    assert core.send_field("Host", "ok") == b"Host: ok\r\n"


def test_send_order() -> None:
    core = HTTPCore()
    with pytest.raises(InvalidArgument, match="first"):
        core.send_field("Host", "x")
    with pytest.raises(InvalidArgument, match="first"):
        core.send_done()
    with pytest.raises(InvalidArgument, match="done"):
        core.check_body()
    core.send_request("GET", "/")
    with pytest.raises(InvalidArgument, match="already sent"):
        core.send_status(200, "OK")
    core.send_done()
    for late in (
        core.send_done,
        lambda: core.send_field("A", "b"),
        lambda: core.send_request("GET", "/"),
    ):
        with pytest.raises(SendAfterDone) as info:
            late()
        assert info.value.errno == errno.EPIPE
    assert core.send_eof() == b""
    with pytest.raises(SendAfterDone):
        core.check_body()


@pytest.mark.parametrize(("setup", "ending"), [(0, b""), (1, b"\r\n"), (2, b"")])
def test_send_eof_ends_an_open_head(setup: int, ending: bytes) -> None:
    core = HTTPCore()
    if setup >= 1:
        core.send_status(200, "OK")
    if setup >= 2:
        core.send_done()
    assert core.send_eof() == ending
    assert core.send_state is SendState.CLOSED


# -- the receive side ------------------------------------------------------------------------------


@CHUNKERS
def test_request_head_and_body(chunker: Chunker) -> None:
    core, head, rest = receive(chunker(REQUEST + b"BODY\r\n\r\nmore"), HeadKind.REQUEST)
    assert isinstance(head, Head)
    assert head.line == RequestLine("GET", "/index.html?q=1", "1.1")
    assert head.fields == (("Host", "example.org"), ("X-Long", "a b"))
    assert head.size == len(REQUEST)
    assert rest == b"BODY\r\n\r\nmore"
    assert core.receive_state is ReceiveState.COMPLETE
    assert core.take_start_line(HeadKind.REQUEST) == head.line
    assert core.next_field() == ("Host", "example.org")
    assert core.remaining_fields() == [("X-Long", "a b")]
    for _ in range(2):  # libdill's end of fields, sticky
        with pytest.raises(PeerDone) as info:
            core.next_field()
        assert info.value.errno == errno.EPIPE
    with pytest.raises(InvalidArgument, match="already received"):
        core.take_start_line(HeadKind.REQUEST)


@CHUNKERS
@pytest.mark.parametrize(
    ("wire", "line"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", StatusLine(200, "OK", "1.1")),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            StatusLine(101, "Switching Protocols", "1.1"),
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n", StatusLine(100, "Continue", "1.1")),
        (b"HTTP/1.0 204\r\nServer: x\r\n\r\n", StatusLine(204, "", "1.0")),
        (
            b"HTTP/1.1 407 Proxy Auth\xe9\r\nProxy-Authenticate: Basic\r\n\r\n",
            StatusLine(407, "Proxy Auth\xe9", "1.1"),
        ),
    ],
)
def test_status_heads(chunker: Chunker, wire: bytes, line: StatusLine) -> None:
    after = b"HTTP/1.1 200 OK\r\n\r\nraw\x00\xff"  # whatever follows stays bytes
    for kind in (HeadKind.STATUS, HeadKind.AUTO):
        _, head, rest = receive(chunker(wire + after), kind)
        assert isinstance(head, Head)
        assert head.line == line
        assert head.kind is HeadKind.STATUS
        assert rest == after


@CHUNKERS
def test_field_names_keep_their_case_and_obs_fold_is_joined(chunker: Chunker) -> None:
    wire = b"PUT /x HTTP/1.1\r\nhOsT: a\r\nX-Folded: one\r\n  two\r\nx-dup: 1\r\nX-Dup: 2\r\n\r\n"
    _, head, rest = receive(chunker(wire))
    assert isinstance(head, Head)
    assert head.fields == (("hOsT", "a"), ("X-Folded", "one two"), ("x-dup", "1"), ("X-Dup", "2"))
    assert rest == b""


@CHUNKERS
def test_empty_lines_before_the_start_line_are_skipped(chunker: Chunker) -> None:
    wire = b"\r\n\n\r\n" + REQUEST + b"body"
    _, head, rest = receive(chunker(wire), HeadKind.REQUEST)
    assert isinstance(head, Head)
    assert head.size == len(REQUEST)
    assert rest == b"body"


@CHUNKERS
def test_end_of_stream_before_a_head(chunker: Chunker) -> None:
    for wire in (b"", b"\r\n"):
        core, result, rest = receive(chunker(wire) or [b""], eof=True)
        assert result is END_OF_STREAM
        assert core.receive_state is ReceiveState.ENDED
        assert rest == wire  # nothing is dropped, not even the empty lines
        assert core.next_head() is END_OF_STREAM


@CHUNKERS
@pytest.mark.parametrize("cut", [b"G", b"\r", b"HTTP/", REQUEST[:-1], b"GET / HTTP/1.1\r\n"])
def test_end_of_stream_inside_a_head(chunker: Chunker, cut: bytes) -> None:
    core, error, rest = receive(chunker(cut), eof=True)
    assert isinstance(error, ConnectionBroken)
    assert error.errno == errno.ECONNRESET
    assert rest == cut
    with pytest.raises(ConnectionBroken):  # sticky
        core.next_head()


@CHUNKERS
@pytest.mark.parametrize(
    ("wire", "hint"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/9\r\nHost: a\r\n\r\n", 400),
        (b"HTTP/1.1 20 OK\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    ],
)
def test_malformed_heads_are_eproto_and_keep_every_byte(
    chunker: Chunker, wire: bytes, hint: int
) -> None:
    data = wire + b"after"
    core, error, rest = receive(chunker(data))
    assert isinstance(error, HTTPProtocolError), error
    assert error.errno == errno.EPROTO
    assert error.status_hint == hint
    assert rest == data  # nothing received is lost
    assert core.receive_state is ReceiveState.BROKEN
    with pytest.raises(HTTPProtocolError):
        core.next_head()
    with pytest.raises(InvalidArgument):
        core.feed(b"more")  # a broken receive side takes nothing more


@CHUNKERS
def test_the_wrong_kind_of_start_line(chunker: Chunker) -> None:
    _, error, _ = receive(chunker(b"HTTP/1.1 200 OK\r\n\r\n"), HeadKind.REQUEST)
    assert isinstance(error, HTTPProtocolError)
    core, head, _ = receive(chunker(REQUEST))  # AUTO: a request
    assert isinstance(head, Head)
    with pytest.raises(HTTPProtocolError, match="expected a status line"):
        core.next_head(HeadKind.STATUS)
    assert core.take_start_line(HeadKind.REQUEST) == head.line  # not sticky: the head stays


@CHUNKERS
@pytest.mark.parametrize(
    ("wire", "hint"),
    [
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 100, 431),  # cut early, never complete
        (b"HTTP/1.1 200 " + b"a" * 100 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: 12345678\r\n" * 40 + b"\r\n", 431),
    ],
)
def test_over_long_lines_and_heads_are_emsgsize(chunker: Chunker, wire: bytes, hint: int) -> None:
    core, error, rest = receive(chunker(wire), max_line_size=64, max_header_size=256)
    assert isinstance(error, HeaderTooLarge), error
    assert error.errno == errno.EMSGSIZE
    assert error.status_hint == hint
    assert rest == wire
    assert core.receive_state is ReceiveState.BROKEN


def test_an_over_long_line_fails_before_it_ends() -> None:
    core = HTTPCore(max_line_size=10)
    core.feed(b"GET /" + b"a" * 5)
    assert core.next_head() is NEED_DATA
    core.feed(b"a")
    with pytest.raises(HeaderTooLarge):
        core.next_head()


def test_empty_lines_cannot_pile_up() -> None:
    _, error, rest = receive([b"\r\n" * 100], max_header_size=100)
    assert isinstance(error, HeaderTooLarge)
    assert rest == b"\r\n" * 100


def test_limits_count_the_head_only() -> None:
    """A long body line right after a small head is not the head's business."""
    wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    _, head, rest = receive([wire + b"b" * 1000], max_line_size=20, max_header_size=len(wire))
    assert isinstance(head, Head)
    assert rest == b"b" * 1000


def test_errors_pickle_with_their_status_hint() -> None:
    for error in (HTTPProtocolError("bad", status_hint=501), HeaderTooLarge("big")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (copy.errno, copy.strerror, copy.status_hint) == (
            error.errno,
            error.strerror,
            error.status_hint,
        )
    assert HeaderTooLarge().status_hint == 431
    assert isinstance(HeaderTooLarge(), HTTPHeadError)


def test_bad_arguments() -> None:
    for limits in ({"max_line_size": 0}, {"max_header_size": -1}, {"max_line_size": 1.5}):
        with pytest.raises(InvalidArgument):
            HTTPCore(**limits)
    core = HTTPCore()
    with pytest.raises(InvalidArgument):
        core.feed("text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        core.next_head("request")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="first"):
        core.next_field()
    with pytest.raises(InvalidArgument, match="first"):
        core.remaining_fields()
    core.feed_eof()
    with pytest.raises(InvalidArgument):
        core.feed(b"x")


# -- any head, any body, any cut -------------------------------------------------------------------

_TOKENS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~",
    min_size=1,
    max_size=12,
)
_VALUES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=20
)


@settings(deadline=None, max_examples=80)
@given(
    request=st.booleans(),
    fields=st.lists(st.tuples(_TOKENS, _VALUES), max_size=6),
    body=st.binary(max_size=200),
    blank_lines=st.integers(0, 2),
    data=st.data(),
)
def test_round_trip_any_chunking(
    request: bool,
    fields: list[tuple[str, str]],
    body: bytes,
    blank_lines: int,
    data: st.DataObject,
) -> None:
    sender = HTTPCore()
    fields = [
        f for f in fields if f[0].lower() not in ("content-length", "transfer-encoding", "host")
    ]
    if request:
        wire = sender.send_request("OPTIONS", "*")
        fields = [("Host", "h"), *fields]
    else:
        wire = sender.send_status(299, "Fine \xe9")
    for name, value in fields:
        wire += sender.send_field(name, value)
    wire += sender.send_done()
    stream = b"\r\n" * blank_lines + wire + body
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    core, head, rest = receive(split(stream, cuts))
    assert isinstance(head, Head), head
    assert head.kind is (HeadKind.REQUEST if request else HeadKind.STATUS)
    assert head.size == len(wire)
    assert head.fields == tuple(fields)
    assert rest == body
    line = core.take_start_line(head.kind)
    assert line == (
        RequestLine("OPTIONS", "*", "1.1") if request else StatusLine(299, "Fine \xe9", "1.1")
    )


@settings(deadline=None, max_examples=60)
@given(junk=st.binary(min_size=1, max_size=120), data=st.data())
def test_garbage_never_loses_a_byte(junk: bytes, data: st.DataObject) -> None:
    """Whatever the bytes and cuts: a head, an error, or a wait; never a byte dropped."""
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=8))
    _, result, rest = receive(split(junk, cuts), eof=True, max_line_size=40, max_header_size=80)
    if isinstance(result, Head):
        assert junk.endswith(rest)
        assert len(junk) - len(rest) >= result.size
    else:
        assert rest == junk
        assert isinstance(result, StackError) or result is END_OF_STREAM
