"""Every error row of the TLS layer: class, errno, and what happens to the stream below."""

import errno
import ssl
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._tls import _SEND_BROKEN as SEND_BROKEN
from trio_tlsattach.testing import attach_both, tls_pair


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
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError, allow_unwrapped=False) as group:
        await attach_both(
            a,
            b,
            ta.TLSClientLayer(stranger, server_hostname="localhost").attach,
            ta.TLSServerLayer(tls_server_cert).attach,
        )
    reasons = {e.reason for e in group.value.exceptions}
    assert "CERTIFICATE_VERIFY_FAILED" in reasons
    client_error = next(
        e for e in group.value.exceptions if e.reason == "CERTIFICATE_VERIFY_FAILED"
    )
    assert client_error.errno == errno.EPROTO
    assert client_error.reason == "CERTIFICATE_VERIFY_FAILED"
    server_error = next(e for e in group.value.exceptions if e is not client_error)
    assert server_error.alert == "unknown_ca"
    assert a.closed
    assert b.closed


async def test_wrong_hostname(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError):
        await attach_both(
            a,
            b,
            ta.TLSClientLayer(tls_ca, server_hostname="example.com").attach,
            ta.TLSServerLayer(tls_server_cert).attach,
        )


async def test_protocol_version_mismatch(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(server_ctx)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError):
        await attach_both(
            *ta.socketpair(),
            ta.TLSClientLayer(client_ctx, server_hostname="localhost").attach,
            ta.TLSServerLayer(server_ctx).attach,
        )


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


async def test_immediate_attach_does_not_wait(tls_server_cert: trustme.LeafCert) -> None:
    a, b = ta.socketpair()
    with pytest.raises(ta.DeadlineExceeded):
        await ta.TLSServerLayer(tls_server_cert).attach(b, ta.IMMEDIATE)
    assert b.closed
    await a.aclose()


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
    client._ssl.write(b"y" * 1000)
    record = client._outgoing.read()
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
    client._ssl.write(b"z" * 100)
    record = bytearray(client._outgoing.read())
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
    client._ssl.write(b"y" * 1000)
    record = client._outgoing.read()
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
