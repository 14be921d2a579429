"""TLSListener: concurrent handshakes, hostile clients, admission control, no leaks."""

import functools
import os
import socket
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._tls import _SEND_BROKEN as SEND_BROKEN


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Server:
    """A TLSListener serving echo on 127.0.0.1 (port 0), recording refusals."""

    def __init__(self, cert: trustme.LeafCert, **kwargs: Any) -> None:
        self.cert = cert
        self.kwargs = kwargs
        self.errors: list[BaseException] = []
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        self.port = raw.socket.getsockname()[1]
        listener = ta.TLSListener(
            raw,
            ta.TLSServerLayer(self.cert),
            on_error=lambda exc, peer: self.errors.append(exc),
            **self.kwargs,
        )

        async def echo(tls: ta.TLSStream) -> None:
            while data := await tls.receive_some():
                await tls.send_all(data)

        try:
            await listener.serve(echo, task_status=task_status)
        finally:
            await raw.aclose()


async def good_client(port: int, ca: trustme.CA) -> None:
    raw = await ta.open_tcp("127.0.0.1", port)
    tls = await ta.TLSClientLayer(ca, server_hostname="localhost").attach(raw, ta.after(30))
    async with tls:
        await tls.send_all(b"hello")
        assert await tls.receive_some(10) == b"hello"


async def raw_client(port: int, payload: bytes, *, reset: bool = False) -> None:
    raw = await ta.open_tcp("127.0.0.1", port)
    if payload:
        await raw.send_all(payload)
    if reset:
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        await raw.aclose()
        return
    with trio.move_on_after(5):
        await raw.receive_some(100)  # the server answers with an alert or closes
    await raw.aclose()


HOSTILE = {
    "garbage": b"\x00\xff" * 50,
    "plaintext_http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "truncated_client_hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "tls_alert": b"\x15\x03\x03\x00\x02\x02\x28",  # fatal handshake_failure
    "oversized_record": b"\x16\x03\x01\xff\xff" + b"\x00" * 100,
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_client_then_good_client(
    name: str,
    autojump_clock: trio.testing.MockClock,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    before = fd_count()
    server = Server(tls_server_cert, handshake_deadline=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await raw_client(server.port, HOSTILE[name])
        await good_client(server.port, tls_ca)
        nursery.cancel_scope.cancel()
    assert server.errors, "the failed handshake did not reach on_error"
    assert fd_count() == before


@pytest.mark.parametrize("payload", [b"", b"\x16\x03\x01\x02\x00\x01"])
async def test_reset_mid_handshake(
    payload: bytes, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    before = fd_count()
    server = Server(tls_server_cert)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await raw_client(server.port, payload, reset=True)
        await good_client(server.port, tls_ca)
        nursery.cancel_scope.cancel()
    assert fd_count() == before


async def test_slowloris_is_cut_and_others_are_served(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    server = Server(tls_server_cert, handshake_deadline=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        slow = await ta.open_tcp("127.0.0.1", server.port)

        async def one_byte_per_second() -> None:
            try:
                for byte in HOSTILE["truncated_client_hello"] * 10:
                    await slow.send_all(bytes([byte]))
                    await trio.sleep(1)
            except ta.ConnectionBroken:
                pass

        nursery.start_soon(one_byte_per_second)
        start = trio.current_time()
        await good_client(server.port, tls_ca)  # not blocked by the slow one
        assert trio.current_time() - start < 1
        await trio.sleep(15)
        assert any(isinstance(e, ta.DeadlineExceeded) for e in server.errors)
        await slow.aclose()
        nursery.cancel_scope.cancel()


async def test_close_without_close_notify_and_reset_mid_record(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    server = Server(tls_server_cert)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for reset in (False, True):
            raw = await ta.open_tcp("127.0.0.1", server.port)
            tls = await ta.TLSClientLayer(tls_ca, server_hostname="localhost").attach(raw)
            tls._ssl.write(b"x" * 5000)
            record = tls._outgoing.read()
            await raw._send_all(record[:2000], ta.FOREVER)
            if reset:
                raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            tls._set(SEND_BROKEN)  # as if our send side broke: close without close_notify
            await tls.aclose()
            await good_client(server.port, tls_ca)
        nursery.cancel_scope.cancel()


async def test_pool_refuses_the_excess_cleanly(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(2)
    server = Server(tls_server_cert, pool=pool)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        held = []
        for _ in range(2):
            raw = await ta.open_tcp("127.0.0.1", server.port)
            held.append(await ta.TLSClientLayer(tls_ca, server_hostname="localhost").attach(raw))
        with pytest.raises((ta.ConnectionBroken, ta.TLSError)):
            await good_client(server.port, tls_ca)
        assert any(isinstance(e, ta.OutOfStateBlocks) for e in server.errors)
        for tls in held:
            await tls.aclose()
        await trio.testing.wait_all_tasks_blocked()
        await good_client(server.port, tls_ca)  # blocks came back to the pool
        nursery.cancel_scope.cancel()
    assert pool.available == 2


async def test_accept_inside_async_with(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = raw.socket.getsockname()[1]
    errors: list[BaseException] = []
    async with (
        ta.TLSListener(
            raw, ta.TLSServerLayer(tls_server_cert), on_error=lambda e, p: errors.append(e)
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(raw_client, port, b"junk")
        nursery.start_soon(good_client, port, tls_ca)
        tls = await listener.accept()
        assert await tls.receive_some(10) == b"hello"
        await tls.send_all(b"hello")
        await tls.aclose()


async def test_serve_tls(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    async def handler(tls: ta.TLSStream) -> None:
        await tls.send_all(await tls.receive_some())

    async with trio.open_nursery() as nursery:
        serve = functools.partial(ta.serve_tls, host="127.0.0.1")
        listeners = await nursery.start(serve, handler, 0, ta.TLSServerLayer(tls_server_cert))
        port = listeners[0].transport_listener.socket.getsockname()[1]
        await good_client(port, tls_ca)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_2000_concurrent_handshakes_with_a_small_pool(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 5000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 2000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 10000)), hard))
    pool = ta.StateBlockPool(500)
    server = Server(tls_server_cert, pool=pool, handshake_deadline=60)
    outcomes = {"ok": 0, "refused": 0}
    layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost", session_cache=False)
    release = trio.Event()

    async def client() -> None:
        raw = await ta.open_tcp("127.0.0.1", server.port)
        try:
            tls = await layer.attach(raw, ta.after(120))
        except (ta.ConnectionBroken, ta.TLSError):
            outcomes["refused"] += 1
            return
        outcomes["ok"] += 1
        await release.wait()
        await tls.aclose()

    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async with trio.open_nursery() as clients:
                for _ in range(2000):
                    clients.start_soon(client)
                while outcomes["ok"] + outcomes["refused"] < 2000:
                    await trio.sleep(0.1)
                release.set()
            nursery.cancel_scope.cancel()
    assert outcomes["ok"] + outcomes["refused"] == 2000
    assert 0 < outcomes["ok"] <= 500 + 1
    assert outcomes["refused"] >= 1500 - 1


async def test_a_peer_gone_before_the_handshake_does_not_end_serve(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """getpeername fails on a connection the peer already reset; serve must carry on."""
    raw_listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = raw_listener.socket.getsockname()[1]
    errors: list[BaseException] = []
    listener = ta.TLSListener(
        raw_listener, ta.TLSServerLayer(tls_server_cert), on_error=lambda e, p: errors.append(e)
    )
    gone = socket.create_connection(("127.0.0.1", port))
    gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    gone.close()  # RST before the server even accepts
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, lambda tls: tls.send_all(b"hi"))
        raw = await ta.open_tcp("127.0.0.1", port)
        tls = await ta.TLSClientLayer(tls_ca, server_hostname="localhost").attach(raw)
        async with tls:
            assert await tls.receive_some(10) == b"hi"
        nursery.cancel_scope.cancel()
    assert errors  # the reset connection was reported, not raised
