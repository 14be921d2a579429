"""Whole stacks: TCP > TLS > prefix > term, detached all the way down to raw TCP."""

import errno
import functools

import pytest
import trio
import trustme

import trio_tlsattach as ta
from trio_tlsattach.testing import attach_both, tcp_pair


async def test_tcp_tls_prefix_term_and_back(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = await tcp_pair()
    client, server = ta.ProtocolStack(a), ta.ProtocolStack(b)
    async with client, server:
        layers: list[tuple[ta.Layer[ta.Handle], ta.Layer[ta.Handle]]] = [
            (
                ta.TLSClientLayer(tls_ca, server_hostname="localhost"),
                ta.TLSServerLayer(tls_server_cert),
            ),
            (ta.PrefixLayer(4), ta.PrefixLayer(4)),
            (ta.TermLayer(b"END"), ta.TermLayer(b"END")),
        ]
        for mine, theirs in layers:
            await attach_both(
                client,
                server,
                functools.partial(ta.ProtocolStack.push, layer=mine),
                functools.partial(ta.ProtocolStack.push, layer=theirs),
            )
        assert repr(client) == "<ProtocolStack tcp > tls(client, TLSv1.3) > prefix(4) > term>"
        top_c, top_s = client.top, server.top
        assert isinstance(top_c, ta.MessageStream)
        assert isinstance(top_s, ta.MessageStream)
        await top_c.send_message(b"request")
        assert await top_s.receive_message() == b"request"
        assert top_s.extra(ta.TLSAttribute.tls_version) == "TLSv1.3"
        for _ in range(3):  # term, prefix, tls
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.pop)
                await client.pop()
        assert client.top is a
        assert server.top is b
        await a.send_all(b"raw again")
        assert await b.receive_some(100) == b"raw again"


async def test_tls_on_a_message_stream_is_protocol_mismatch(
    tls_server_cert: trustme.LeafCert,
) -> None:
    a, b = ta.socketpair()
    msgs = await ta.PrefixLayer(4).attach(a)
    with pytest.raises(ta.ProtocolMismatch) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(msgs)
    assert info.value.errno == errno.EPROTO
    assert msgs.closed
    await b.aclose()


async def test_bytes_read_past_each_layer_come_back_at_every_detach(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """The peer sends everything in one burst; each detach hands back what was read past it."""
    a, b = await tcp_pair()
    client = ta.ProtocolStack(a)
    tls_c: ta.TLSStream
    tls_s: ta.TLSStream
    tls_c, tls_s = await attach_both(
        client,
        b,
        lambda stack: stack.push(ta.TLSClientLayer(tls_ca, server_hostname="localhost")),
        ta.TLSServerLayer(tls_server_cert).attach,
    )
    await client.push(ta.PrefixLayer(4))
    term = await client.push(ta.TermLayer(b"END"))
    await tls_s.send_all(
        b"\x00\x00\x00\x05hello"  # a message
        b"\x00\x00\x00\x03END"  # the final message
        b"\x00\x00\x00\x0aafter term"  # for the prefix layer once term is gone
        b"raw TLS bytes"  # for the TLS stream once prefix is gone
    )
    assert await term.receive_message() == b"hello"
    assert await term.receive_message() is None
    prefix = await client.pop()
    assert isinstance(prefix, ta.FramedStream)
    assert await prefix.receive_message() == b"after term"
    tls = await client.pop()
    assert tls is tls_c
    assert await tls_c.receive_some(13) == b"raw TLS bytes"
    got = b""
    while len(got) < 7:  # what the client's term layer sent: its final message, framed
        got += await tls_s.receive_some(7 - len(got))
    assert got == b"\x00\x00\x00\x03END"

    async def server_side() -> None:
        raw = await tls_s.detach()
        assert isinstance(raw, ta.ByteStream)
        await raw.send_all(b"plain TCP")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        tcp = await client.pop()
    assert tcp is a
    assert repr(client) == "<ProtocolStack tcp>"
    assert await tcp.receive_some(100) == b"plain TCP"
    await client.aclose()
    await b.aclose()


async def test_kind_mismatches_close_what_was_passed() -> None:
    cases: list[tuple[ta.Layer[ta.MessageStream], ta.Layer[ta.MessageStream]]] = [
        (ta.PrefixLayer(4), ta.PrefixLayer(2)),  # prefix on prefix
        (ta.CRLFLayer(), ta.SuffixLayer(b"\n")),  # suffix on suffix
        (ta.PrefixLayer(4), ta.CRLFLayer()),
    ]
    for below, layer in cases:
        a, b = ta.socketpair()
        stack = ta.ProtocolStack(a)
        msgs = await stack.push(below)
        with pytest.raises(ta.ProtocolMismatch) as info:
            await stack.push(layer)
        assert info.value.errno == errno.EPROTO
        assert isinstance(info.value, TypeError)
        assert msgs.closed
        assert a.closed
        await b.aclose()
    a, b = ta.socketpair()
    with pytest.raises(ta.ProtocolMismatch):
        await ta.term_attach(a, b"END")  # term needs a message stream
    assert a.closed
    await b.aclose()
