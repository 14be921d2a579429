"""Whole stacks: TCP > TLS > prefix > term, detached all the way down to raw TCP."""

import errno

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
        layers = [
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
                lambda stack, layer=mine: stack.push(layer),  # type: ignore[misc]
                lambda stack, layer=theirs: stack.push(layer),  # type: ignore[misc]
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
