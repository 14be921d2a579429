"""TLSStream as a drop-in for trio.SSLStream: what trio's own test suite found (see
``interop/test_trio_ssl_suite.py``), each kept here as a small test of its own.

Transports without a buffer (lockstep streams), a second task waiting for room while a receive
flushes, IDNA 2008 names, a handshake that failed part-way, HTTPS mode, and the accessors and
setters that ``ssl.SSLObject`` users reach for.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def pinned(context: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    context.minimum_version = context.maximum_version = version
    return context


async def handshake_both(*streams: ta.TLSStream) -> None:
    async with trio.open_nursery() as nursery:
        for stream in streams:
            nursery.start_soon(stream.do_handshake)


def socketpair_streams(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    server_hostname: str = "localhost",
    https_compatible: bool = False,
) -> tuple[ta.TLSStream, ta.TLSStream]:
    """A client and a server TLSStream on a socketpair, made the drop-in way."""
    a, b = ta.socketpair()
    client = ta.TLSStream(
        a, client_context, server_hostname=server_hostname, https_compatible=https_compatible
    )
    return client, ta.TLSStream(b, server_context, server_side=True)


@pytest.mark.parametrize("version", VERSIONS, ids=["1.2", "1.3"])
async def test_handshake_on_a_stream_without_buffer(
    version: ssl.TLSVersion,
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A TLS 1.3 server's session tickets come after the client's handshake is over: on a
    lockstep stream, sending them at once would wait for a client that is not reading."""
    a, b = trio.testing.lockstep_stream_pair()
    client = ta.TLSStream(a, pinned(client_ssl_context, version), server_hostname="localhost")
    server = ta.TLSStream(b, server_ssl_context, server_side=True)
    with trio.fail_after(60):  # on the mock clock: a deadlock fails at once
        await handshake_both(client, server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"tickets first")  # they go in front
            got = b""
            while got != b"tickets first":
                got += await client.receive_some()
    assert client.session is not None
    assert client.session.has_ticket
    # A graceful close would wait for a peer that reads its close_notify (trio.SSLStream too).
    await trio.aclose_forcefully(client)
    await trio.aclose_forcefully(server)


async def test_wait_send_all_might_not_block_while_a_receive_flushes(
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A receive that handshakes sends ciphertext; a second task waiting for room queues
    behind it instead of colliding with it on the stream below."""
    a, b = trio.testing.memory_stream_pair()

    async def slow_pump() -> None:
        await trio.sleep(1)
        trio.testing.memory_stream_pump(a.send_stream, b.receive_stream)

    a.send_stream.send_all_hook = slow_pump
    client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
    server = ta.TLSStream(b, server_ssl_context, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.receive_some)  # handshakes: its ClientHello goes out slowly
        await trio.sleep(0.1)
        nursery.start_soon(server.do_handshake)
        await client.wait_send_all_might_not_block()
        assert trio.current_time() >= 1  # it waited for the receive's flush
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(client)  # the handshake was cut short: nothing to say
    await trio.aclose_forcefully(server)


async def test_server_hostname_is_encoded_with_idna_2008(
    tls_ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    """Python's ``ssl`` would send ``fass.de`` (IDNA 2003); the right name is another host."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("xn--fa-hia.de").configure_cert(server_ctx)
    client, server = socketpair_streams(client_ssl_context, server_ctx, server_hostname="faß.de")
    assert client.server_hostname == "xn--fa-hia.de"
    await handshake_both(client, server)  # the certificate for the IDNA 2008 name matches
    assert server.server_hostname == "xn--fa-hia.de"
    await client.aclose()
    await server.aclose()


@pytest.mark.parametrize("name", ["☃.example", "ünï" + "a" * 64 + ".example"])
async def test_server_hostname_that_is_no_host_name_is_invalid(
    name: str, client_ssl_context: ssl.SSLContext
) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument, match="server_hostname"):
        ta.TLSStream(a, client_ssl_context, server_hostname=name)
    await a.aclose()
    await b.aclose()


async def _fails(call: Callable[[], Awaitable[object]]) -> BaseException:
    with pytest.raises(Exception) as info:  # noqa: PT011 (the class is what is checked)
        await call()
    return info.value


async def test_a_handshake_whose_send_failed_stays_failed(
    client_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    """The ClientHello was lost with the stream below: trying again must not wait for ever
    for an answer to it."""
    a, b = trio.testing.memory_stream_pair()

    async def broken() -> None:
        raise trio.BrokenResourceError("the wire is cut")

    a.send_stream.send_all_hook = broken
    client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
    with trio.fail_after(60):
        first = await _fails(client.do_handshake)
        assert isinstance(first, ta.ConnectionBroken)
        again = await _fails(client.do_handshake)
        assert isinstance(again, ta.ConnectionBroken)
        assert isinstance(await _fails(client.receive_some), ta.ConnectionBroken)
    await client.aclose()
    await b.aclose()


async def test_a_handshake_whose_stream_raised_stays_failed(
    client_ssl_context: ssl.SSLContext, autojump_clock: trio.testing.MockClock
) -> None:
    """A foreign stream's own exception passes through once; after it, the stream below is
    in an unknown place, so the connection is broken rather than read again."""
    a, b = trio.testing.memory_stream_pair()

    async def boom() -> None:
        raise KeyError("the stream's own bug")

    a.receive_stream.receive_some_hook = boom
    client = ta.TLSStream(a, client_ssl_context, server_hostname="localhost")
    with trio.fail_after(60):
        assert isinstance(await _fails(client.do_handshake), KeyError)
        assert isinstance(await _fails(client.do_handshake), ta.ConnectionBroken)
    await client.aclose()
    await b.aclose()


async def test_https_mode_eof_before_the_handshake_is_an_end_of_stream(
    server_ssl_context: ssl.SSLContext,
) -> None:
    """Browsers open connections they close unused: in HTTPS mode the server just sees EOF."""
    for https in (True, False):
        a, b = ta.socketpair()
        server = ta.TLSStream(b, server_ssl_context, server_side=True, https_compatible=https)
        await a.aclose()
        if https:
            assert await server.receive_some() == b""
            assert await server.receive_some() == b""  # and it stays so
            with pytest.raises(ta.ConnectionBroken):
                await server.send_all(b"nobody is there")
        else:
            with pytest.raises(ta.ConnectionBroken, match="during the handshake"):
                await server.receive_some()
        await server.aclose()


async def test_https_mode_closes_without_close_notify(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = socketpair_streams(
        client_ssl_context, server_ssl_context, https_compatible=True
    )
    await handshake_both(client, server)
    await client.aclose()
    with pytest.raises(ta.ConnectionBroken):  # no close_notify: not a clean end of stream
        await server.receive_some()
    await server.aclose()


async def test_context_and_session_can_be_set_before_the_handshake(
    tls_ca: trustme.CA, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """As on ``ssl.SSLObject``: a server switches context (SNI), a client resumes a session."""
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", organization_unit_name="other").configure_cert(other)
    pinned(client_ssl_context, ssl.TLSVersion.TLSv1_2)  # sessions without waiting for tickets
    sessions: list[ssl.SSLSession | None] = []
    for _ in range(2):
        client, server = socketpair_streams(client_ssl_context, server_ssl_context)
        server.context = other
        assert server.context is other
        if sessions:
            client.session = sessions[0]
        await handshake_both(client, server)
        peer = client.getpeercert()
        assert peer is not None
        assert (("organizationalUnitName", "other"),) in peer["subject"]
        sessions.append(client.session)
        assert client.session_reused == (len(sessions) == 2)
        await client.aclose()
        await server.aclose()


async def test_pending_counts_what_a_receive_returns_without_reading(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = socketpair_streams(client_ssl_context, server_ssl_context)
    await handshake_both(client, server)
    assert client.pending() == 0
    await server.send_all(b"x" * 100)
    assert await client.receive_some(10) == b"x" * 10
    assert client.pending() == 90
    assert await client.receive_some(1000) == b"x" * 90
    assert client.pending() == 0
    await client.aclose()
    await server.aclose()


async def test_selected_npn_protocol_is_deprecated_and_none(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    client, server = socketpair_streams(client_ssl_context, server_ssl_context)
    with pytest.raises(trio.NeedHandshakeError):
        client.selected_npn_protocol()
    await handshake_both(client, server)
    with pytest.warns(DeprecationWarning, match="NPN"):
        assert client.selected_npn_protocol() is None
    await client.aclose()
    await server.aclose()


async def test_verify_client_post_handshake(
    tls_ca: trustme.CA, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """TLS 1.3: the server asks for the client's certificate after the handshake; the request
    leaves with its next send and the answer arrives with the client's next one."""
    server_ssl_context.verify_mode = ssl.CERT_REQUIRED
    server_ssl_context.post_handshake_auth = True
    tls_ca.configure_trust(server_ssl_context)
    client_ssl_context.post_handshake_auth = True
    tls_ca.issue_cert("client@example.org").configure_cert(client_ssl_context)
    client, server = socketpair_streams(client_ssl_context, server_ssl_context)
    await handshake_both(client, server)
    assert server.getpeercert() is None
    server.verify_client_post_handshake()
    await server.send_all(b"who are you?")
    assert await client.receive_some() == b"who are you?"  # answers the request
    await client.send_all(b"me")
    assert await server.receive_some() == b"me"
    peer = server.getpeercert()
    assert peer is not None
    assert ("email", "client@example.org") in peer["subjectAltName"]
    await client.aclose()
    await server.aclose()


def test_subscriptable_like_trio_ssl_stream() -> None:
    """trio.SSLStream is generic in its transport; code that spells ``SSLStream[...]`` at run
    time (a type alias) keeps working with TLSStream in its place. (Type checkers see TLSStream
    as not generic: the transport below is not a type parameter here.)"""
    stream_class: Any = ta.TLSStream
    alias = stream_class[trio.SocketStream]
    assert alias.__origin__ is ta.TLSStream
    assert alias.__args__ == (trio.SocketStream,)


async def test_tasks_that_meet_in_the_handshake_wait_for_the_first_one(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """Three tasks start the handshake at once: one runs it, the others wait for its end and
    carry on; after a failed handshake, the waiting tasks see the stream broken."""
    client, server = socketpair_streams(client_ssl_context, server_ssl_context)
    received: list[bytes] = []

    async def receive() -> None:
        received.append(await server.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(receive)
        await client.do_handshake()
        await client.send_all(b"after the handshake")
    assert received == [b"after the handshake"]
    await client.aclose()
    await server.aclose()

    stranger = trustme.CA().issue_cert("localhost")  # a certificate the client does not trust
    other = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    stranger.configure_cert(other)
    client, server = socketpair_streams(client_ssl_context, other)
    errors: list[BaseException] = []

    async def handshake() -> None:
        try:
            await server.do_handshake()
        except (ta.TLSError, ta.ConnectionBroken) as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake)
        nursery.start_soon(handshake)
        with pytest.raises(ta.TLSError):
            await client.do_handshake()
        await client.aclose()
    assert len(errors) == 2
    assert any(isinstance(e, ta.ConnectionBroken) for e in errors)  # the waiting task's
    await server.aclose()
