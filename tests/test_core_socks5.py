"""SOCKS5Core (sans-IO SOCKS5, RFC 1928 + RFC 1929): wire format, both ends, bad input."""

from __future__ import annotations

import errno

import pytest
from _core_helpers import CHUNKERS, Chunker, bytewise, split, state_of
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsattach._cores import NEED_DATA
from trio_tlsattach._cores._common import StateMachine
from trio_tlsattach._cores.socks5 import (
    ADDRESS_TYPE_NOT_SUPPORTED,
    ATYP_IPV4,
    ATYP_IPV6,
    ATYP_NAME,
    BIND,
    COMMAND_NOT_SUPPORTED,
    CONNECT,
    CONNECTION_REFUSED,
    METHOD_NO_AUTH,
    METHOD_NONE,
    METHOD_USERPASS,
    SUCCESS,
    TRANSITIONS,
    AuthReply,
    AuthRequest,
    Greeting,
    MethodChoice,
    Reply,
    Request,
    Role,
    SOCKS5Core,
    SOCKS5Event,
    SOCKS5ProtocolError,
    SOCKS5State,
    encode_address,
    encode_reply,
)
from trio_tlsattach._errors import ConnectionBroken, InvalidArgument


def deliver(core: SOCKS5Core, wire: bytes, chunker: Chunker) -> object:
    """Feed one message's bytes in chunks; it must complete at its last byte, not before."""
    result: object = NEED_DATA
    for chunk in chunker(wire):
        if result is not NEED_DATA:
            assert not chunk, "a message completed before its last byte"
            continue
        core.feed(chunk)
        result = core.next_event()
    assert result is not NEED_DATA
    return result


def handshake(
    chunker: Chunker, credentials: tuple[str, str] | None, host: str, port: int
) -> tuple[SOCKS5Core, SOCKS5Core, list[object]]:
    """A whole conversation between a client core and a proxy core; returns what each got."""
    client, proxy = SOCKS5Core(Role.CLIENT), SOCKS5Core(Role.PROXY)
    seen: list[object] = []
    methods = (METHOD_NO_AUTH,) if credentials is None else (METHOD_NO_AUTH, METHOD_USERPASS)
    seen.append(deliver(proxy, client.send_greeting(methods), chunker))
    chosen = METHOD_NO_AUTH if credentials is None else METHOD_USERPASS
    seen.append(deliver(client, proxy.send_method(chosen), chunker))
    if credentials is not None:
        seen.append(deliver(proxy, client.send_auth(*credentials), chunker))
        seen.append(deliver(client, proxy.send_auth_status(True), chunker))
    seen.append(deliver(proxy, client.send_request(CONNECT, host, port), chunker))
    seen.append(deliver(client, proxy.send_reply(SUCCESS, "10.1.2.3", 4321), chunker))
    return client, proxy, seen


# -- wire format (RFC 1928 and RFC 1929 examples) ------------------------------------------------


def test_wire_format() -> None:
    client = SOCKS5Core(Role.CLIENT)
    assert client.send_greeting([METHOD_NO_AUTH, METHOD_USERPASS]) == b"\x05\x02\x00\x02"
    proxy = SOCKS5Core(Role.PROXY)
    proxy.feed(b"\x05\x02\x00\x02")
    assert proxy.next_event() == Greeting((0, 2))
    assert proxy.send_method(METHOD_USERPASS) == b"\x05\x02"
    client.feed(b"\x05\x02")
    assert client.next_event() == MethodChoice(METHOD_USERPASS)
    assert client.send_auth("user", "pass") == b"\x01\x04user\x04pass"
    proxy.feed(b"\x01\x04user\x04pass")
    assert proxy.next_event() == AuthRequest("user", "pass")
    assert proxy.send_auth_status(True) == b"\x01\x00"
    assert state_of(proxy) is SOCKS5State.REQUEST
    reply = encode_reply(SUCCESS, "192.0.2.1", 1080)
    assert reply == b"\x05\x00\x00\x01\xc0\x00\x02\x01\x04\x38"


@pytest.mark.parametrize(
    ("host", "port", "wire"),
    [
        ("127.0.0.1", 80, b"\x01\x7f\x00\x00\x01\x00\x50"),
        ("::1", 443, b"\x04" + b"\x00" * 15 + b"\x01\x01\xbb"),
        ("example.org", 65535, b"\x03\x0bexample.org\xff\xff"),
        ("bücher.example", 1, b"\x03\x15xn--bcher-kva.example\x00\x01"),
    ],
    ids=["ipv4", "ipv6", "name", "idna"],
)
def test_address_encoding(host: str, port: int, wire: bytes) -> None:
    assert encode_address(host, port) == wire
    request = SOCKS5Core(Role.CLIENT, SOCKS5State.REQUEST).send_request(CONNECT, host, port)
    assert request == b"\x05\x01\x00" + wire
    proxy = SOCKS5Core(Role.PROXY, SOCKS5State.REQUEST)
    proxy.feed(request)
    got = proxy.next_event()
    assert isinstance(got, Request)
    assert (got.command, got.port, got.address_type) == (CONNECT, port, wire[0])
    assert got.host == (host if host.isascii() else "xn--bcher-kva.example")


def test_reply_encoding() -> None:
    assert encode_reply(SUCCESS) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert encode_reply(CONNECTION_REFUSED, "::", 0) == b"\x05\x05\x00\x04" + b"\x00" * 18


# -- whole conversations -------------------------------------------------------------------------

HOSTS = [("127.0.0.1", ATYP_IPV4), ("2001:db8::7", ATYP_IPV6), ("localhost", ATYP_NAME)]


@CHUNKERS
@pytest.mark.parametrize(("host", "atyp"), HOSTS, ids=["ipv4", "ipv6", "name"])
@pytest.mark.parametrize("credentials", [None, ("user", "pass")], ids=["noauth", "userpass"])
def test_conversation(
    chunker: Chunker, host: str, atyp: int, credentials: tuple[str, str] | None
) -> None:
    client, proxy, seen = handshake(chunker, credentials, host, 5555)
    if credentials is None:
        assert seen == [
            Greeting((METHOD_NO_AUTH,)),
            MethodChoice(METHOD_NO_AUTH),
            Request(CONNECT, host, 5555, atyp),
            Reply(SUCCESS, "10.1.2.3", 4321, ATYP_IPV4),
        ]
    else:
        assert seen[2:4] == [AuthRequest(*credentials), AuthReply(0)]
    assert client.state is proxy.state is SOCKS5State.ESTABLISHED
    assert client.trailing_data == proxy.trailing_data == b""


@settings(deadline=None, max_examples=60)
@given(
    credentials=st.none() | st.tuples(st.text(max_size=60), st.text(max_size=60)),  # <= 240 B
    host=st.ip_addresses().map(str)
    | st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?", fullmatch=True),
    port=st.integers(0, 65535),
    early=st.binary(max_size=30),
    data=st.data(),
)
def test_conversation_any_chunking(
    credentials: tuple[str, str] | None, host: str, port: int, early: bytes, data: st.DataObject
) -> None:
    def chunker(wire: bytes) -> list[bytes]:
        return split(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))

    *_, seen = handshake(chunker, credentials, host, port)
    request = seen[-2]
    assert isinstance(request, Request)
    assert (request.host, request.port) == (host, port)
    if credentials is not None:
        assert seen[2] == AuthRequest(*credentials)
    # The tunnel's first bytes, fed with the reply, stay as trailing data: nothing lost.
    client2 = SOCKS5Core(Role.CLIENT, SOCKS5State.REQUEST)
    client2.send_request(CONNECT, host, port)
    wire = encode_reply(SUCCESS, host, port) + early
    for chunk in chunker(wire):
        client2.feed(chunk)
    assert client2.next_event() == Reply(SUCCESS, host, port, request.address_type)
    assert client2.trailing_data == early
    assert state_of(client2) is SOCKS5State.ESTABLISHED


def test_pipelined_greeting_and_request_are_parsed_one_at_a_time() -> None:
    proxy = SOCKS5Core(Role.PROXY)
    request = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
    proxy.feed(b"\x05\x01\x00" + request + b"GET /")
    assert proxy.next_event() == Greeting((0,))
    assert proxy.trailing_data == request + b"GET /"
    proxy.send_method(METHOD_NO_AUTH)
    assert proxy.next_event() == Request(CONNECT, "127.0.0.1", 80, ATYP_IPV4)
    assert proxy.trailing_data == b"GET /"


@CHUNKERS
def test_refusals(chunker: Chunker) -> None:
    client, proxy = SOCKS5Core(Role.CLIENT), SOCKS5Core(Role.PROXY)
    deliver(proxy, client.send_greeting([METHOD_NO_AUTH]), chunker)
    assert deliver(client, proxy.send_method(METHOD_NONE), chunker) == MethodChoice(METHOD_NONE)
    assert client.state is proxy.state is SOCKS5State.FAILED

    client, proxy = SOCKS5Core(Role.CLIENT), SOCKS5Core(Role.PROXY)
    deliver(proxy, client.send_greeting([METHOD_USERPASS]), chunker)
    deliver(client, proxy.send_method(METHOD_USERPASS), chunker)
    deliver(proxy, client.send_auth("", ""), chunker)  # RFC 1929 lengths may be 0 here
    assert deliver(client, proxy.send_auth_status(False), chunker) == AuthReply(0xFF)
    assert client.state is proxy.state is SOCKS5State.FAILED

    client, proxy = (
        SOCKS5Core(Role.CLIENT, SOCKS5State.REQUEST),
        SOCKS5Core(Role.PROXY, SOCKS5State.REQUEST),
    )
    deliver(proxy, client.send_request(BIND, "0.0.0.0", 0), chunker)
    reply = deliver(client, proxy.send_reply(COMMAND_NOT_SUPPORTED), chunker)
    assert reply == Reply(COMMAND_NOT_SUPPORTED, "0.0.0.0", 0, ATYP_IPV4)
    assert client.state is proxy.state is SOCKS5State.FAILED


# -- bad input -----------------------------------------------------------------------------------

GREETING = SOCKS5State.GREETING
REQUEST = SOCKS5State.REQUEST


@pytest.mark.parametrize(
    ("role", "start", "before", "wire", "match"),
    [
        (Role.PROXY, GREETING, b"", b"\x04", "version byte 0x04"),
        (Role.PROXY, GREETING, b"", b"\x05\x00", "no authentication method"),
        (Role.CLIENT, GREETING, b"", b"\x04", "version byte 0x04"),
        (Role.CLIENT, GREETING, b"", b"\x05\x02", "not offered"),
        (Role.CLIENT, GREETING, b"", b"\x05\x80", "not offered"),
        (Role.PROXY, REQUEST, b"", b"\x04", "version byte"),
        (Role.PROXY, REQUEST, b"", b"\x05\x01\x01", "reserved byte is 0x01"),
        (Role.PROXY, REQUEST, b"", b"\x05\x01\x00\x03\x00", "empty domain name"),
        (Role.PROXY, REQUEST, b"", b"\x05\x01\x00\x03\x02\xff\xfe\x00\x50", "not UTF-8"),
        (Role.PROXY, REQUEST, b"", b"\x05\x01\x00\x03\x02a\x00\x00\x50", "NUL byte"),
        (Role.CLIENT, REQUEST, b"", b"\x06", "version byte"),
        (Role.CLIENT, REQUEST, b"", b"\x05\x00\x00\x05", "unknown address type"),
        (Role.CLIENT, REQUEST, b"", b"\x05\x00\x07", "reserved byte"),
    ],
)
def test_malformed_is_eproto_at_the_first_bad_byte(
    role: Role, start: SOCKS5State, before: bytes, wire: bytes, match: str
) -> None:
    core = SOCKS5Core(role, start)
    if role is Role.CLIENT:
        core.send_greeting([METHOD_NO_AUTH]) if start is GREETING else core.send_request(
            CONNECT, "127.0.0.1", 80
        )
    core.feed(before + wire[:-1])
    assert core.next_event() is NEED_DATA  # nothing wrong yet
    core.feed(wire[-1:])
    with pytest.raises(SOCKS5ProtocolError, match=match) as info:
        core.next_event()
    assert info.value.errno == errno.EPROTO
    assert info.value.reply is None
    assert core.state is SOCKS5State.FAILED
    with pytest.raises(SOCKS5ProtocolError, match=match):  # sticky
        core.next_event()


def outcome(core: SOCKS5Core, chunks: list[bytes]) -> list[object]:
    """Everything a proxy core says when fed ``chunks``, answering as a proxy would."""
    said: list[object] = []
    for chunk in chunks:
        core.feed(chunk)
        while core.state in (GREETING, SOCKS5State.AUTH, REQUEST):
            try:
                event = core.next_event()
            except SOCKS5ProtocolError as exc:
                said.append(("EPROTO", exc.reply))
                return said
            if event is NEED_DATA:
                break
            said.append(event)
            if isinstance(event, Greeting):
                method = METHOD_USERPASS if METHOD_USERPASS in event.methods else METHOD_NONE
                core.send_method(method)
            elif isinstance(event, AuthRequest):
                core.send_auth_status(True)
    return said


@settings(deadline=None, max_examples=150)
@given(
    wire=st.tuples(
        st.sampled_from([b"", b"\x05", b"\x05\x02\x00\x02", b"\x05\x01\x02\x01\x01u\x01p"]),
        st.binary(max_size=60),
    ).map(b"".join),  # garbage, or a valid start with anything after it
    data=st.data(),
)
def test_any_bytes_give_the_same_answer_however_cut(wire: bytes, data: st.DataObject) -> None:
    # The proxy core answers messages or EPROTO, never anything else, and the same whether it
    # gets the bytes whole, cut anywhere, or one at a time.
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    whole = outcome(SOCKS5Core(Role.PROXY), [wire])
    assert outcome(SOCKS5Core(Role.PROXY), split(wire, cuts)) == whole
    assert outcome(SOCKS5Core(Role.PROXY), bytewise(wire)) == whole


def test_bad_auth_version() -> None:
    core = SOCKS5Core(Role.PROXY)
    core.feed(b"\x05\x01\x02")
    core.next_event()
    core.send_method(METHOD_USERPASS)
    core.feed(b"\x05")
    with pytest.raises(SOCKS5ProtocolError, match="username/password request: version"):
        core.next_event()
    client = SOCKS5Core(Role.CLIENT)
    client.send_greeting([METHOD_USERPASS])
    client.feed(b"\x05\x02")
    client.next_event()
    client.send_auth("u", "p")
    client.feed(b"\x05\x00")
    with pytest.raises(SOCKS5ProtocolError, match="username/password reply"):
        client.next_event()


@pytest.mark.parametrize(
    ("wire", "reply", "match"),
    [
        (b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", COMMAND_NOT_SUPPORTED, "unknown command"),
        (b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50", COMMAND_NOT_SUPPORTED, "unknown command"),
        (b"\x05\x01\x00\x02", ADDRESS_TYPE_NOT_SUPPORTED, "unknown address type 0x02"),
    ],
)
def test_unsupported_request_still_gets_its_reply(wire: bytes, reply: int, match: str) -> None:
    core = SOCKS5Core(Role.PROXY, REQUEST)
    core.feed(wire)
    with pytest.raises(SOCKS5ProtocolError, match=match) as info:
        core.next_event()
    assert info.value.errno == errno.EPROTO
    assert info.value.reply == reply
    assert core.state is SOCKS5State.REPLY  # the proxy may still answer
    assert core.send_reply(reply) == encode_reply(reply)
    assert state_of(core) is SOCKS5State.FAILED


@pytest.mark.parametrize("cut", [0, 1, 3, 5])
def test_eof_mid_handshake_is_sticky_connection_broken(cut: int) -> None:
    core = SOCKS5Core(Role.PROXY, REQUEST)
    core.feed(b"\x05\x01\x00\x01\x7f\x00"[:cut])
    core.feed_eof()
    core.feed_eof()  # harmless
    for _ in range(2):
        with pytest.raises(ConnectionBroken) as info:
            core.next_event()
        assert info.value.errno == errno.ECONNRESET
    assert core.state is SOCKS5State.FAILED
    with pytest.raises(InvalidArgument, match="after feed_eof"):
        core.feed(b"x")


def test_out_of_turn_and_bad_arguments_are_einval() -> None:
    client, proxy = SOCKS5Core(Role.CLIENT), SOCKS5Core(Role.PROXY)
    with pytest.raises(InvalidArgument, match="cannot send a request"):
        client.send_request(CONNECT, "::1", 1)
    with pytest.raises(InvalidArgument, match="cannot send a greeting"):
        proxy.send_greeting([0])
    with pytest.raises(InvalidArgument, match="expects no message"):
        client.next_event()
    for methods in ([], [0, 0], [0xFF], ["0"], list(range(256))):
        with pytest.raises(InvalidArgument):
            client.send_greeting(methods)  # type: ignore[arg-type]
    assert client.state is SOCKS5State.GREETING  # nothing changed
    client.send_greeting([METHOD_NO_AUTH])
    proxy.feed(b"\x05\x01\x00")
    proxy.next_event()
    with pytest.raises(InvalidArgument, match="not offered"):
        proxy.send_method(METHOD_USERPASS)
    with pytest.raises(InvalidArgument):
        SOCKS5Core(Role.CLIENT, SOCKS5State.REPLY)
    with pytest.raises(InvalidArgument):
        SOCKS5Core("client")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        client.feed("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("x" * 256, 80),
        ("", 80),
        ("a\x00b", 80),
        ("127.0.0.1", 65536),
        ("h", -1),
        ("h", True),
        (None, 80),
        ("h", "80"),
        ("\udcff.example", 1),
    ],
)
def test_address_arguments(host: object, port: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        encode_address(host, port)
    assert info.value.errno == errno.EINVAL


def test_reply_and_credential_arguments() -> None:
    for reply in (9, -1, True, "0"):
        with pytest.raises(InvalidArgument):
            encode_reply(reply)  # type: ignore[arg-type]
    client = SOCKS5Core(Role.CLIENT, REQUEST)
    with pytest.raises(InvalidArgument):
        client.send_request(4, "127.0.0.1", 80)
    core = SOCKS5Core(Role.CLIENT)
    core.send_greeting([METHOD_USERPASS])
    core.feed(b"\x05\x02")
    core.next_event()
    with pytest.raises(InvalidArgument):
        core.send_auth("u" * 256, "p")
    with pytest.raises(InvalidArgument):
        core.send_auth("u", 5)  # type: ignore[arg-type]
    assert core.send_auth(b"\xff", "é") == b"\x01\x01\xff\x02\xc3\xa9"


def test_table_and_repr() -> None:
    machine = StateMachine(TRANSITIONS, SOCKS5State.ESTABLISHED)
    with pytest.raises(InvalidArgument, match="ERROR in state ESTABLISHED"):
        machine.fire(SOCKS5Event.ERROR)
    assert repr(SOCKS5Core(Role.PROXY)) == "<SOCKS5Core proxy state=GREETING pending=0>"
    assert SOCKS5Core(Role.PROXY).role is Role.PROXY
