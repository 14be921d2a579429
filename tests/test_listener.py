"""TLSListener's API: serve, accept inside and outside ``async with``, pools, serve_tls.

Hostile clients and the load test are in test_reliability.py.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import resource
import socket
import struct
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._listener import FD_RESERVE, REFUSAL_DRAIN, fit_fd_limit


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def tcp_listener() -> tuple[trio.SocketListener, int]:
    raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    return raw, raw.socket.getsockname()[1]


async def client(port: int, ca: trustme.CA, send: bytes = b"hello") -> bytes:
    """Handshake, send ``send``, return what comes back before the server's close_notify."""
    raw = await ta.open_tcp("127.0.0.1", port)
    tls = await ta.TLSClientLayer(ca, server_hostname="localhost").attach(raw, ta.after(30))
    async with tls:
        await tls.send_all(send)
        received = b""
        while data := await tls.receive_some():
            received += data
        return received


async def junk_client(port: int, payload: bytes = b"GET / HTTP/1.0\r\n\r\n") -> None:
    raw = await ta.open_tcp("127.0.0.1", port)
    async with raw:
        await raw.send_all(payload)
        with trio.move_on_after(20):
            while await raw.receive_some(100):
                pass


async def reply_once(tls: ta.TLSStream) -> None:
    await tls.send_all(await tls.receive_some())


async def test_bad_arguments(tls_server_cert: trustme.LeafCert) -> None:
    raw, _ = await tcp_listener()
    async with raw:
        with pytest.raises(TypeError):
            ta.TLSListener(raw, object())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="handshake_deadline"):
            ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert), handshake_deadline=0)


async def test_serve_runs_the_handler_and_sends_close_notify(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()
    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, reply_once)
        # b"" at the end means a close_notify arrived (no close_notify is ConnectionBroken).
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.ClosedResourceError):  # serve closed the transport listener
        await raw.accept()


async def test_default_on_error_logs_one_line(
    caplog: pytest.LogCaptureFixture, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()
    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
    with caplog.at_level(logging.WARNING, logger="trio_tlsattach"):
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve, reply_once)
            await junk_client(port)
            assert await client(port, tls_ca) == b"hello"
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("127.0.0.1:")
    assert "handshake failed" in lines[0]


async def test_handler_stream_errors_end_only_that_connection(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()
    calls = 0

    async def handler(tls: ta.TLSStream) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ta.ConnectionBroken("the first one breaks")
        await reply_once(tls)

    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, handler)
        assert await client(port, tls_ca) == b""  # closed (with close_notify) by serve
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()


async def test_handler_bugs_propagate(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()

    async def handler(tls: ta.TLSStream) -> None:
        raise ZeroDivisionError

    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve, handler)
            nursery.start_soon(client, port, tls_ca)
            await trio.sleep_forever()


async def test_accept_inside_async_with_handshakes_concurrently(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()
    errors: list[BaseException] = []
    layer = ta.TLSServerLayer(tls_server_cert)
    listener = ta.TLSListener(raw, layer, on_error=lambda e, p: errors.append(e))
    async with listener, trio.open_nursery() as nursery:
        silent = await ta.open_tcp("127.0.0.1", port)  # never says anything
        nursery.start_soon(junk_client, port)
        nursery.start_soon(client, port, tls_ca)
        start = trio.current_time()
        tls = await listener.accept()  # not held up by the silent one
        assert trio.current_time() - start < 1
        async with tls:
            assert await tls.receive_some(10) == b"hello"
        await trio.sleep(11)
        assert any(isinstance(e, ta.DeadlineExceeded) for e in errors)
        await silent.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_async_with_closes_unclaimed_connections(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    fds = fd_count()
    raw, port = await tcp_listener()
    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
    # Leaving ``async with`` closes the listener: the client sees close_notify, not a hang.
    async with trio.open_nursery() as nursery, listener:
        nursery.start_soon(client, port, tls_ca)
        await trio.testing.wait_all_tasks_blocked()  # handshaken, waiting to be accepted
    assert fd_count() == fds


async def test_accept_without_async_with_handshakes_inline(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw, port = await tcp_listener()
    errors: list[BaseException] = []
    listener = ta.TLSListener(
        raw, ta.TLSServerLayer(tls_server_cert), on_error=lambda e, p: errors.append(e)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(junk_client, port)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(client, port, tls_ca)
        async with await listener.accept() as tls:  # the junk one is skipped
            assert await tls.receive_some(10) == b"hello"
    assert len(errors) == 1
    await listener.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


@pytest.mark.parametrize("where", ["listener", "layer"])
async def test_pool_bounds_live_connections(
    where: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(2)
    raw, port = await tcp_listener()
    errors: list[BaseException] = []
    if where == "listener":
        layer = ta.TLSServerLayer(tls_server_cert)
        listener = ta.TLSListener(raw, layer, pool=pool, on_error=lambda e, p: errors.append(e))
    else:
        layer = ta.TLSServerLayer(tls_server_cert, pool=pool)
        listener = ta.TLSListener(raw, layer, on_error=lambda e, p: errors.append(e))
    release = trio.Event()

    async def hold(tls: ta.TLSStream) -> None:
        await release.wait()
        await reply_once(tls)

    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, hold)
        held = [await ta.open_tcp("127.0.0.1", port) for _ in range(2)]
        layer_c = ta.TLSClientLayer(tls_ca, server_hostname="localhost")
        streams = [await layer_c.attach(h, ta.after(30)) for h in held]
        assert pool.available == 0
        with pytest.raises(ta.TLSError, match="INTERNAL_ERROR"):
            await client(port, tls_ca)  # refused: an alert and a FIN, not a reset
        assert [type(e) for e in errors] == [ta.OutOfStateBlocks]
        release.set()
        for tls in streams:
            async with tls:
                await tls.send_all(b"x")
                assert await tls.receive_some() == b"x"
        await trio.testing.wait_all_tasks_blocked()
        assert pool.available == 2
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()
    assert pool.available == 2


async def test_a_refused_client_gets_an_alert_and_a_fin_not_a_reset(
    autojump_clock: trio.testing.MockClock, tls_server_cert: trustme.LeafCert
) -> None:
    """A refusal reads what the client sent (its ClientHello) so the close sends no RST; a
    client that never closes its end is cut after REFUSAL_DRAIN."""
    raw, port = await tcp_listener()
    listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert), pool=ta.StateBlockPool(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, reply_once)
        holder = await ta.open_tcp("127.0.0.1", port)  # takes the one block, says nothing
        await trio.testing.wait_all_tasks_blocked()
        for client_closes in (True, False):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(b"\x16\x03\x01" + bytes(5000))  # left unread, this would be a RST
            received = b""
            while chunk := await sock.recv(100):  # a reset raises ConnectionResetError
                received += chunk
            assert received == bytes([21, 3, 3, 0, 2, 2, 80])  # fatal internal_error, then FIN
            await trio.testing.wait_all_tasks_blocked()
            fds = fd_count()
            if client_closes:
                sock.close()
                await trio.testing.wait_all_tasks_blocked()
                assert fd_count() == fds - 2  # ours, and the server's end at once
                continue
            await trio.sleep(REFUSAL_DRAIN - 0.1)
            assert fd_count() == fds  # the server still waits for our FIN
            await trio.sleep(0.2)
            assert fd_count() == fds - 1  # then gives up on us
            sock.close()
        await holder.aclose()
        nursery.cancel_scope.cancel()


async def test_out_of_file_descriptors_is_waited_out(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    raw, port = await tcp_listener()

    class Flaky(trio.abc.Listener[Any]):
        failures = 3

        async def accept(self) -> Any:
            await trio.lowlevel.checkpoint()
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return await raw.accept()

        async def aclose(self) -> None:
            await raw.aclose()

    listener = ta.TLSListener(Flaky(), ta.TLSServerLayer(tls_server_cert))
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, reply_once)
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()
    assert sum("Too many open files" in r.getMessage() for r in caplog.records) == 3


async def test_a_peer_gone_before_accept_does_not_end_serve(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """getpeername fails on a connection the peer already reset; serve carries on."""
    raw, port = await tcp_listener()
    errors: list[BaseException] = []
    listener = ta.TLSListener(
        raw, ta.TLSServerLayer(tls_server_cert), on_error=lambda e, p: errors.append(e)
    )
    gone = socket.create_connection(("127.0.0.1", port))
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    gone.close()  # RST before the server even accepts
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, reply_once)
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()
    assert errors  # the reset connection was reported, not raised


async def test_serve_tls_and_open_tls_listeners(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    layer = ta.TLSServerLayer(tls_server_cert)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(ta.serve_tls, host="127.0.0.1")
        listeners = await nursery.start(serve, reply_once, 0, layer)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        assert await client(port, tls_ca) == b"hello"
        nursery.cancel_scope.cancel()
    listeners = await ta.open_tls_listeners(0, layer, host="127.0.0.1", handshake_deadline=5)
    assert [type(x) for x in listeners] == [ta.TLSListener]
    assert listeners[0].handshake_deadline == 5
    for listener in listeners:
        await listener.aclose()


def test_fit_fd_limit_raises_the_soft_limit_and_checks_its_arguments() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1000:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is too low to test raising the soft one")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        assert fit_fd_limit(300, 2) == 300
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (600 + FD_RESERVE, hard)
        assert fit_fd_limit(10) == 10  # never lowers it
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 600 + FD_RESERVE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for bad in ((0, 1), (1, 0), (-5, 2)):
        with pytest.raises(ValueError, match="at least 1"):
            fit_fd_limit(*bad)
