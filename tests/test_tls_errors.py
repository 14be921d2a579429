"""Every error row of the TLS layer: class, errno, and what happens to the stream below."""

import errno
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _tls_helpers import seal

import trio_tlsattach as ta
from trio_tlsattach._tlswire import _SEND_BROKEN as SEND_BROKEN
from trio_tlsattach.testing import attach_both, tls_pair


def tls_errors(group: ExceptionGroup[ta.TLSError]) -> list[ta.TLSError]:
    """The members of ``group``: TLSErrors, not nested groups (RaisesGroup checked that)."""
    members = []
    for exc in group.exceptions:
        assert isinstance(exc, ta.TLSError)
        members.append(exc)
    return members


async def _server_fails_on(raw: bytes, cert: trustme.LeafCert) -> ta.TLSError:
    a, b = ta.socketpair()
    await a.send_all(raw)
    with pytest.raises(ta.TLSError) as info:
        await ta.TLSServerLayer(cert).attach(b, ta.after(5))
    assert b.closed  # a failed attach closes the stream it was given
    await a.aclose()
    return info.value


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x00" * 64,
        b"\x16\x03\x01\x00\x05hello",  # a handshake record that is no ClientHello
    ],
)
async def test_garbage_instead_of_client_hello(
    garbage: bytes, tls_server_cert: trustme.LeafCert
) -> None:
    exc = await _server_fails_on(garbage, tls_server_cert)
    assert exc.errno == errno.EPROTO
    assert isinstance(exc.__cause__, ssl.SSLError)
    assert exc.reason


async def test_untrusted_certificate(tls_server_cert: trustme.LeafCert) -> None:
    stranger = trustme.CA()
    a, b = ta.socketpair()
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError) as group:
        await attach_both(
            a,
            b,
            ta.TLSClientLayer(stranger, server_hostname="localhost").attach,
            ta.TLSServerLayer(tls_server_cert).attach,
        )
    members = tls_errors(group.value)
    reasons = {e.reason for e in members}
    assert "CERTIFICATE_VERIFY_FAILED" in reasons
    client_error = next(e for e in members if e.reason == "CERTIFICATE_VERIFY_FAILED")
    assert client_error.errno == errno.EPROTO
    assert client_error.reason == "CERTIFICATE_VERIFY_FAILED"
    server_error = next(e for e in members if e is not client_error)
    assert server_error.alert == "unknown_ca"
    assert a.closed
    assert b.closed


async def test_wrong_hostname(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError) as group:
        await attach_both(
            a,
            b,
            ta.TLSClientLayer(tls_ca, server_hostname="example.com").attach,
            ta.TLSServerLayer(tls_server_cert).attach,
        )
    members = tls_errors(group.value)
    errors = {e.reason: e for e in members}
    client_error = errors["CERTIFICATE_VERIFY_FAILED"]
    assert client_error.errno == errno.EPROTO
    assert "Hostname mismatch" in str(client_error)
    assert isinstance(client_error.__cause__, ssl.SSLCertVerificationError)
    assert {e.errno for e in members} == {errno.EPROTO}
    assert a.closed
    assert b.closed


@pytest.mark.parametrize("client_max", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_protocol_version_mismatch(
    client_max: ssl.TLSVersion, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(server_ctx)
    if client_max is ssl.TLSVersion.TLSv1_2:  # the client is too old for the server...
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    else:  # ...or the server is too old for the client
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    a, b = ta.socketpair()
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError) as group:
        await attach_both(
            a,
            b,
            ta.TLSClientLayer(client_ctx, server_hostname="localhost").attach,
            ta.TLSServerLayer(server_ctx).attach,
        )
    members = tls_errors(group.value)
    for exc in members:
        assert exc.errno == errno.EPROTO
        assert isinstance(exc.__cause__, ssl.SSLError)
    reasons = {e.reason for e in members}
    assert reasons & {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"}, reasons
    assert a.closed
    assert b.closed


async def test_client_against_a_plaintext_server(tls_ca: trustme.CA) -> None:
    a, b = ta.socketpair()
    await b.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ta.TLSError) as info:
        await ta.tls_attach_client(a, ta.after(5), context=tls_ca, server_hostname="localhost")
    assert info.value.errno == errno.EPROTO
    assert info.value.reason == "WRONG_VERSION_NUMBER"
    assert a.closed
    await b.aclose()


async def test_missing_client_certificate_is_an_alert_on_both_ends(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """TLS 1.3: the client's handshake is over before the server checks its certificate, so
    the client learns about the failure from the alert, on its first receive."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(server_ctx)
    tls_ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    a, b = ta.socketpair()
    clients: list[ta.TLSStream] = []

    async def client_attach() -> None:
        clients.append(await ta.tls_attach_client(a, context=tls_ca, server_hostname="localhost"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_attach)
        with pytest.raises(ta.TLSError) as server_info:
            await ta.TLSServerLayer(server_ctx).attach(b)
    (client,) = clients
    assert server_info.value.errno == errno.EPROTO
    assert server_info.value.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert b.closed
    with pytest.raises(ta.TLSError) as client_info:
        await client.receive_some(10)
    assert client_info.value.errno == errno.EPROTO
    assert client_info.value.alert == "certificate_required"
    with pytest.raises(ta.TLSError):  # sticky
        await client.receive_some(10)
    await client.aclose()


async def test_bytestream_layer_on_a_message_stream_is_protocol_mismatch(
    tls_server_cert: trustme.LeafCert, server_ssl_context: ssl.SSLContext
) -> None:
    a, b = ta.socketpair()
    messages = await ta.PrefixLayer(4).attach(b)
    with pytest.raises(ta.ProtocolMismatch) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(messages)
    assert info.value.errno == errno.EPROTO
    assert isinstance(info.value, TypeError)
    assert messages.closed  # libdill closes what it was given
    assert b.closed
    # The same through a stack, and with the drop-in constructor.
    c, d = ta.socketpair()
    stack = ta.ProtocolStack(d)
    await stack.push(ta.CRLFLayer())
    with pytest.raises(ta.ProtocolMismatch):
        await stack.push(ta.TLSServerLayer(tls_server_cert))
    assert d.closed
    e, f = ta.socketpair()
    lines = await ta.CRLFLayer().attach(f)
    with pytest.raises(ta.ProtocolMismatch):
        ta.TLSStream(lines, server_ssl_context, server_side=True)
    for handle in (a, c, e, lines):
        await handle.aclose()


async def test_attach_to_a_closed_or_owned_stream_is_ebadf(
    tls_server_cert: trustme.LeafCert,
) -> None:
    a, b = ta.socketpair()
    await b.aclose()
    with pytest.raises(ta.BadHandle) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(b)
    assert info.value.errno == errno.EBADF
    await a.aclose()


async def test_handshake_deadline_closes_the_stream(
    autojump_clock: trio.testing.MockClock, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    start = trio.current_time()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await ta.tls_attach_server(b, tls_server_cert, None, ta.after(10))
    assert info.value.errno == errno.ETIMEDOUT
    assert trio.current_time() - start == pytest.approx(10)
    assert b.closed
    await a.aclose()


async def test_immediate_attach_does_not_wait(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """IMMEDIATE: do what can be done now (answer a ClientHello already there), never wait."""
    start = trio.current_time()
    a, b = ta.socketpair()
    with pytest.raises(ta.DeadlineExceeded) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(b, ta.IMMEDIATE)
    assert info.value.errno == errno.ETIMEDOUT
    assert b.closed
    # With the ClientHello already waiting, the server still cannot finish without waiting.
    c, d = ta.socketpair()
    client = ta.TLSStream(c, ta.TLSClientLayer(tls_ca, server_hostname="localhost").context,
                          server_hostname="localhost")  # fmt: skip
    with trio.move_on_after(0) as scope:  # sends the ClientHello, then is cancelled waiting
        await client.do_handshake()
    assert scope.cancelled_caught
    with pytest.raises(ta.DeadlineExceeded):
        await ta.TLSServerLayer(tls_server_cert).attach(d, ta.IMMEDIATE)
    assert d.closed
    assert trio.current_time() == start  # no virtual time passed: nothing waited
    for handle in (a, client):
        await handle.aclose()


async def test_immediate_does_what_can_be_done(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    start = trio.current_time()
    async with client, server:
        await client.send_all(b"small", ta.IMMEDIATE)  # fits in the socket buffer
        assert await server.receive_some(100, ta.IMMEDIATE) == b"small"
        with pytest.raises(ta.DeadlineExceeded):
            await server.receive_some(100, ta.IMMEDIATE)
        await server.send_all(b"x")  # still usable
        assert await client.receive_some(1, ta.IMMEDIATE) == b"x"
        # The peer's close_notify is already here: an IMMEDIATE detach can finish.
        await ta.tls_done(server)
        await trio.testing.wait_all_tasks_blocked()
        raw = await ta.tls_detach(client, ta.IMMEDIATE)
        assert raw.status == "open"
        assert trio.current_time() == start
        await raw.aclose()


async def test_bad_deadline_is_einval_and_closes(tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.InvalidArgument) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(b, -5)
    assert info.value.errno == errno.EINVAL
    assert b.closed
    await a.aclose()


async def test_peer_closes_during_handshake(tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    await a.aclose()
    with pytest.raises(ta.ConnectionBroken) as info:
        await ta.TLSServerLayer(tls_server_cert).attach(b)
    assert info.value.errno == errno.ECONNRESET


async def test_eof_without_close_notify_mid_stream(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    await client.send_all(b"data")
    client._set(SEND_BROKEN)  # pretend the send side broke, so close sends no close_notify
    await client.aclose()
    assert await server.receive_some(100) == b"data"
    for _ in range(2):  # sticky
        with pytest.raises(ta.ConnectionBroken) as info:
            await server.receive_some(100)
        assert info.value.errno == errno.ECONNRESET
    await server.aclose()


async def test_truncated_record(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    record = seal(client, b"y" * 1000)
    await a._send_all(record[:100], ta.FOREVER)
    a.socket.shutdown(2)
    with pytest.raises(ta.ConnectionBroken, match="middle of a TLS record"):
        await server.receive_some(100)
    await client.aclose()
    await server.aclose()


async def test_corrupted_record_is_tls_error(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    record = bytearray(seal(client, b"z" * 100))
    record[-1] ^= 0xFF  # break the AEAD tag
    await a._send_all(record, ta.FOREVER)
    with pytest.raises(ta.TLSError) as info:
        await server.receive_some(100)
    assert info.value.errno == errno.EPROTO
    with pytest.raises(ta.TLSError):
        await server.receive_some(100)
    await client.aclose()
    await server.aclose()


async def test_receive_timeout_only_waiting_keeps_stream(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        start = trio.current_time()
        with pytest.raises(ta.DeadlineExceeded):
            await server.receive_some(10, ta.after(3))
        assert trio.current_time() - start == pytest.approx(3)
        with trio.move_on_after(2):
            await server.receive_some(10)
        await client.send_all(b"still fine")
        assert await server.receive_some(100) == b"still fine"
        with pytest.raises(ta.DeadlineExceeded):
            await server.receive_some(10, ta.IMMEDIATE)


async def test_receive_timeout_mid_record_breaks_receiving(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    record = seal(client, b"y" * 1000)
    await a._send_all(record[:100], ta.FOREVER)
    with pytest.raises(ta.DeadlineExceeded):
        await server.receive_some(10, ta.after(1))
    with pytest.raises(ta.ConnectionBroken) as info:
        await server.receive_some(10)
    assert info.value.errno == errno.ECONNRESET
    await server.send_all(b"the send side still works")
    assert await client.receive_some(100) == b"the send side still works"
    await client.aclose()
    await server.aclose()


async def test_send_interrupted_mid_record_breaks_sending(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        with pytest.raises(ta.DeadlineExceeded):
            await client.send_all(b"x" * 50_000_000, ta.after(2))  # nobody reads
        for _ in range(2):
            with pytest.raises(ta.ConnectionBroken) as info:
                await client.send_all(b"more")
            assert info.value.errno == errno.ECONNRESET


async def test_detach_deadline_closes_the_stack(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    with pytest.raises(ta.DeadlineExceeded):
        await client.detach(ta.after(4))  # the server never answers with its close_notify
    assert client.closed
    assert a.closed
    await server.aclose()


async def test_facade_argument_errors(tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.NotSupported) as info:
        await ta.tls_done(a)  # type: ignore[arg-type]
    assert info.value.errno == errno.ENOTSUP
    with pytest.raises(ta.NotSupported):
        await ta.tls_detach(a)  # type: ignore[arg-type]
    with pytest.raises(ta.InvalidArgument):
        await ta.tls_attach_server_mem(b, tls_server_cert, None, None)
    assert b.closed
    await a.aclose()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((42,), {}),
        (("/nonexistent/cert.pem", "/nonexistent/key.pem"), {}),
        ((b"not a pem",), {}),
        ((b"pem", "path-key"), {}),
        ((ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), "key.pem"), {}),
    ],
)
def test_bad_certificates_are_einval(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        ta.TLSServerLayer(*args, **kwargs)
    assert info.value.errno == errno.EINVAL


def test_bad_client_arguments(tls_ca: trustme.CA) -> None:
    with pytest.raises(ta.InvalidArgument):
        ta.TLSClientLayer(tls_ca)  # verifying hostnames needs server_hostname
    with pytest.raises(ta.InvalidArgument):
        ta.TLSClientLayer(tls_ca, server_hostname="x", alpn="h2")  # a str, not a list
    with pytest.raises(ta.InvalidArgument):
        ta.TLSClientLayer(12, server_hostname="x")  # type: ignore[arg-type]
    with pytest.raises(ta.InvalidArgument):
        ta.TLSClientLayer("/nonexistent-ca.pem", server_hostname="x")


async def test_cancelled_handshake_closes_the_stream(
    autojump_clock: trio.testing.MockClock, tls_server_cert: trustme.LeafCert
) -> None:
    """Trio's own cancellation propagates untouched (ECANCELED's row), and attach cleans up."""
    a, b = ta.socketpair()
    with trio.move_on_after(7) as scope:
        await ta.TLSServerLayer(tls_server_cert).attach(b)
    assert scope.cancelled_caught
    assert b.closed
    await a.aclose()


async def test_cancelled_detach_closes_the_stack(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    a, b = ta.socketpair()
    client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
    with trio.move_on_after(3) as scope:
        await client.detach()
    assert scope.cancelled_caught
    assert client.closed
    assert a.closed
    with pytest.raises(ta.BadHandle) as info:
        await client.receive_some(1)
    assert info.value.errno == errno.EBADF
    await server.aclose()


async def test_receive_cancelled_while_waiting_keeps_the_stream(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await tls_pair(*ta.socketpair(), tls_ca, tls_server_cert)
    async with client, server:
        for _ in range(3):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.receive_into, bytearray(10))
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            # the same with a deadline, through receive_into
            with pytest.raises(ta.DeadlineExceeded):
                await server.receive_into(bytearray(10), ta.after(1))
        await client.send_all(b"fine")
        assert await server.receive_some(10) == b"fine"
        await server.send_all(b"and back")
        assert await client.receive_some(10) == b"and back"


async def test_https_compatible_treats_a_bare_eof_as_the_end(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """``trio.SSLStream``'s ``https_compatible``: EOF without close_notify is a clean end."""
    a, b = ta.socketpair()
    server = ta.TLSStream(a, server_ssl_context, server_side=True, https_compatible=True)
    client = ta.TLSStream(b, client_ssl_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        await server.do_handshake()
    await client.send_all(b"body")
    b.socket.shutdown(socket.SHUT_WR)  # the end of the byte stream, but no close_notify
    assert await server.receive_some(100) == b"body"
    assert await server.receive_some(100) == b""
    assert await server.receive_some(100) == b""
    await server.aclose()
    await client.aclose()


async def test_facade_closes_the_stream_on_bad_arguments(tls_ca: trustme.CA) -> None:
    """libdill: a failed attach closes ``s``, also when the arguments fail before any I/O."""
    attempts: list[Callable[[ta.SocketTransport], Awaitable[ta.TLSStream]]] = [
        lambda s: ta.tls_attach_server(s, b"not a pem", None),
        lambda s: ta.tls_attach_server_mem(s, 42, None, bytearray(ta.TLS_SIZE)),  # type: ignore[arg-type]
        lambda s: ta.tls_attach_client(s, context=tls_ca),  # no server_hostname
        lambda s: ta.tls_attach_client(s, context=tls_ca, server_hostname="x", alpn="h2"),
        lambda s: ta.tls_attach_client_mem(s, bytearray(10), context=tls_ca, server_hostname="x"),
        lambda s: ta.tls_attach_client_mem(s, None, context=tls_ca, server_hostname="x"),
    ]
    for attempt in attempts:
        a, b = ta.socketpair()
        with pytest.raises(ta.InvalidArgument) as info:
            await attempt(b)
        assert info.value.errno == errno.EINVAL
        assert b.closed
        await a.aclose()
