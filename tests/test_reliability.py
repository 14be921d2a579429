"""TLSListener against hostile clients: after each, a good client is served and nothing leaks.

Every scenario runs a real listener on 127.0.0.1 (port 0) under trio's MockClock, so handshake
deadlines and slow clients take no real time. After the hostile client, the test waits until
the server has given up on it, then checks that a good client still gets an echo and that the
process holds exactly the file descriptors and Trio tasks it held before the hostile client.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _tls_helpers import seal

import trio_tlsattach as ta
from trio_tlsattach._tlswire import _SEND_BROKEN

HANDSHAKE_DEADLINE = 10
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None  # only None outside trio.run
    return walk(root)


class Server:
    """A TLSListener serving echo on 127.0.0.1:0; records what went to on_error."""

    def __init__(self, cert: trustme.LeafCert, **kwargs: Any) -> None:
        self.layer = ta.TLSServerLayer(cert)
        self.kwargs = kwargs
        self.errors: list[BaseException] = []
        self.handler_errors: list[BaseException] = []
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        self.port = raw.socket.getsockname()[1]
        listener = ta.TLSListener(
            raw, self.layer, on_error=lambda exc, peer: self.errors.append(exc), **self.kwargs
        )
        await listener.serve(self.echo, task_status=task_status)

    async def echo(self, tls: ta.TLSStream) -> None:
        try:
            buffer = bytearray(65536)
            while n := await tls.receive_into(buffer):
                await tls.send_all(memoryview(buffer)[:n])
        except (ta.StackError, trio.BrokenResourceError) as exc:
            self.handler_errors.append(exc)
            raise


async def good_client(port: int, ca: trustme.CA) -> None:
    raw = await ta.open_tcp("127.0.0.1", port)
    tls = await ta.TLSClientLayer(ca, server_hostname="localhost").attach(raw, ta.after(30))
    async with tls:
        await tls.send_all(b"hello")
        assert await tls.receive_some(10) == b"hello"
        await tls.send_eof()
        assert await tls.receive_some(10) == b""


async def send_then_close(port: int, payload: bytes, *, reset: bool = False) -> None:
    """Send ``payload`` raw; then reset, or read the server's answer (alert or EOF) and close."""
    raw = await ta.open_tcp("127.0.0.1", port)
    try:
        if payload:
            await raw.send_all(payload)
        if reset:
            raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            return
        with trio.move_on_after(HANDSHAKE_DEADLINE + 5):
            while await raw.receive_some(4096):
                pass  # an alert, then EOF
    except ta.ConnectionBroken:
        pass  # the server reset us: also a refusal
    finally:
        await raw.aclose()


async def handshaken_then(
    port: int, ca: trustme.CA, misbehave: Callable[..., Awaitable[None]]
) -> None:
    """A real handshake, then ``misbehave(tls, raw)`` on the established connection."""
    raw = await ta.open_tcp("127.0.0.1", port)
    tls = await ta.TLSClientLayer(ca, server_hostname="localhost").attach(raw, ta.after(30))
    try:
        await tls.send_all(b"ping")  # the server has finished its side of the handshake too
        assert await tls.receive_some(10) == b"ping"
        await misbehave(tls, raw)
    finally:
        await tls.aclose()


async def wire_send(raw: ta.SocketTransport, data: bytes) -> None:
    """Bytes straight onto the socket, under the TLS layer that owns it (test-only access)."""
    await raw._send_all(data, ta.FOREVER)


async def wire_drain(raw: ta.SocketTransport) -> None:
    """Read what the server answers (an alert) until it closes. A server that gave up before
    reading all we sent closes with unread bytes, which the kernel turns into a reset."""
    with trio.move_on_after(5), contextlib.suppress(ta.ConnectionBroken):
        while await raw._receive_some(4096, ta.FOREVER):
            pass


def half_record(tls: ta.TLSStream) -> bytes:
    """The first 2000 bytes of an encrypted 5000-byte application-data record."""
    return seal(tls, b"x" * 5000)[:2000]


async def reset_mid_record(tls: ta.TLSStream, raw: ta.SocketTransport) -> None:
    await wire_send(raw, half_record(tls))
    raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    tls._set(_SEND_BROKEN)  # close below without a close_notify


async def eof_mid_record(tls: ta.TLSStream, raw: ta.SocketTransport) -> None:
    await wire_send(raw, half_record(tls))
    tls._set(_SEND_BROKEN)


async def close_without_close_notify(tls: ta.TLSStream, raw: ta.SocketTransport) -> None:
    await tls.send_all(b"bye")
    assert await tls.receive_some(10) == b"bye"
    tls._set(_SEND_BROKEN)


async def oversized_record(tls: ta.TLSStream, raw: ta.SocketTransport) -> None:
    # An application-data record longer than TLS allows (2^14 + 256 for TLS 1.3).
    await wire_send(raw, b"\x17\x03\x03\xff\xff" + os.urandom(0xFFFF))
    await wire_drain(raw)
    tls._set(_SEND_BROKEN)


async def alert_after_handshake(tls: ta.TLSStream, raw: ta.SocketTransport) -> None:
    await wire_send(raw, b"\x15\x03\x03\x00\x02\x02\x50")  # fatal internal_error, in the clear
    await wire_drain(raw)
    tls._set(_SEND_BROKEN)


PRE_HANDSHAKE = {
    "garbage": (b"\x00\xff" * 50, False),
    "plaintext_http": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
    "truncated_client_hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),
    "tls_alert": (b"\x15\x03\x03\x00\x02\x02\x28", False),  # fatal handshake_failure
    "oversized_record_header": (b"\x16\x03\x01\xff\xff" + b"\x00" * 100, False),
    "connect_and_close": (b"", False),
    "reset_before_hello": (b"", True),
    "reset_mid_handshake": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", True),
}

POST_HANDSHAKE: dict[str, Callable[..., Awaitable[None]]] = {
    "reset_mid_record": reset_mid_record,
    "eof_mid_record": eof_mid_record,
    "close_without_close_notify": close_without_close_notify,
    "oversized_record": oversized_record,
    "tls_alert_after_handshake": alert_after_handshake,
}


async def check_survives(
    server: Server, ca: trustme.CA, hostile: Callable[[], Awaitable[None]]
) -> None:
    """Run ``hostile`` against a serving listener; then a good client; then count leaks."""
    fds_before = fd_count()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await good_client(server.port, ca)  # warm up: contexts and caches are built
        await trio.testing.wait_all_tasks_blocked()
        fds, tasks = fd_count(), task_count()
        await hostile()
        await trio.sleep(HANDSHAKE_DEADLINE + 1)  # the server gives up on it by now
        await good_client(server.port, ca)
        await trio.testing.wait_all_tasks_blocked()
        assert fd_count() == fds, "a file descriptor leaked"
        assert task_count() == tasks, "a task leaked"
        nursery.cancel_scope.cancel()
    assert fd_count() == fds_before


@pytest.mark.parametrize("name", list(PRE_HANDSHAKE))
async def test_hostile_before_the_handshake(
    name: str,
    autojump_clock: trio.testing.MockClock,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    payload, reset = PRE_HANDSHAKE[name]
    server = Server(tls_server_cert, handshake_deadline=HANDSHAKE_DEADLINE)
    await check_survives(server, tls_ca, lambda: send_then_close(server.port, payload, reset=reset))
    assert len(server.errors) == 1, server.errors  # exactly the hostile one reached on_error
    assert not server.handler_errors


@pytest.mark.parametrize("name", list(POST_HANDSHAKE))
async def test_hostile_after_the_handshake(
    name: str,
    autojump_clock: trio.testing.MockClock,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    server = Server(tls_server_cert, handshake_deadline=HANDSHAKE_DEADLINE)
    await check_survives(
        server, tls_ca, lambda: handshaken_then(server.port, tls_ca, POST_HANDSHAKE[name])
    )
    assert not server.errors  # the handshake itself was fine
    assert len(server.handler_errors) == 1, server.handler_errors
    assert isinstance(server.handler_errors[0], trio.BrokenResourceError)


async def test_slowloris_is_cut_and_others_are_served(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    server = Server(tls_server_cert, handshake_deadline=HANDSHAKE_DEADLINE)
    cut = trio.Event()

    async def slowloris() -> None:
        raw = await ta.open_tcp("127.0.0.1", server.port)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 500
        try:
            for byte in hello:  # one byte per second: 511 s if nobody cuts it
                await raw.send_all(bytes([byte]))
                await trio.sleep(1)
        except ta.ConnectionBroken:
            cut.set()
        finally:
            await raw.aclose()

    async def good_clients_meanwhile() -> None:
        for _ in range(3):
            start = trio.current_time()
            await good_client(server.port, tls_ca)
            assert trio.current_time() - start < 1  # not held up by the slow one
            await trio.sleep(2)

    async def hostile() -> None:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slowloris)
            await trio.sleep(0.5)
            nursery.start_soon(good_clients_meanwhile)
        assert cut.is_set()
        assert HANDSHAKE_DEADLINE <= trio.current_time() - start < HANDSHAKE_DEADLINE + 3

    await check_survives(server, tls_ca, hostile)
    assert [type(e) for e in server.errors] == [ta.DeadlineExceeded]


async def test_many_hostile_clients_at_once(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    server = Server(tls_server_cert, handshake_deadline=HANDSHAKE_DEADLINE)

    async def hostile() -> None:
        async with trio.open_nursery() as nursery:
            for payload, reset in PRE_HANDSHAKE.values():
                for _ in range(5):
                    nursery.start_soon(
                        functools.partial(send_then_close, server.port, payload, reset=reset)
                    )
            for misbehave in POST_HANDSHAKE.values():
                nursery.start_soon(handshaken_then, server.port, tls_ca, misbehave)
            nursery.start_soon(good_client, server.port, tls_ca)

    await check_survives(server, tls_ca, hostile)
    assert len(server.errors) == 5 * len(PRE_HANDSHAKE)
    assert len(server.handler_errors) == len(POST_HANDSHAKE)


async def test_pool_exhaustion_is_a_clean_refusal(
    autojump_clock: trio.testing.MockClock, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    pool = ta.StateBlockPool(3)
    server = Server(tls_server_cert, pool=pool, handshake_deadline=HANDSHAKE_DEADLINE)
    held: list[ta.TLSStream] = []

    async def hostile() -> None:
        for _ in range(2):  # the warm-up client gave its block back; 1 stays free
            raw = await ta.open_tcp("127.0.0.1", server.port)
            held.append(await ta.TLSClientLayer(tls_ca, server_hostname="localhost").attach(raw))
        idle = await ta.open_tcp("127.0.0.1", server.port)  # holds the last block, says nothing
        await trio.testing.wait_all_tasks_blocked()
        assert pool.available == 0
        for _ in range(10):
            with pytest.raises(trio.BrokenResourceError):  # closed at once, no handshake
                await good_client(server.port, tls_ca)
        await idle.aclose()
        for tls in held:
            await tls.aclose()

    await check_survives(server, tls_ca, hostile)
    assert sum(isinstance(e, ta.OutOfStateBlocks) for e in server.errors) == 10
    assert pool.available == 3


@pytest.mark.slow
async def test_2000_concurrent_handshakes_through_a_smaller_pool(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """2000 clients at once, 500 state blocks: each client completes or is refused cleanly."""
    clients, blocks = 2000, 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 200  # both ends of every connection live in this process
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        pool = ta.StateBlockPool(blocks)
        server = Server(tls_server_cert, pool=pool, handshake_deadline=60)
        outcomes = {"ok": 0, "refused": 0}
        layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost", session_cache=False)
        release = trio.Event()
        fds_before = fd_count()

        async def client() -> None:
            raw = await ta.open_tcp("127.0.0.1", server.port)
            try:
                tls = await layer.attach(raw, ta.after(120))
            except trio.BrokenResourceError:  # ConnectionBroken or TLSError: closed by the server
                outcomes["refused"] += 1
                return
            outcomes["ok"] += 1
            await release.wait()  # hold the block until everyone has an answer
            await tls.send_all(b"ping")
            assert await tls.receive_some(10) == b"ping"
            await tls.aclose()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                async with trio.open_nursery() as crowd:
                    for _ in range(clients):
                        crowd.start_soon(client)
                    while outcomes["ok"] + outcomes["refused"] < clients:
                        await trio.sleep(0.05)
                    assert pool.in_use == outcomes["ok"]
                    release.set()
                await trio.testing.wait_all_tasks_blocked()
                assert pool.available == blocks  # every block came back
                await good_client(server.port, tls_ca)
                nursery.cancel_scope.cancel()
        assert outcomes["ok"] + outcomes["refused"] == clients
        assert 0 < outcomes["ok"] <= blocks
        assert outcomes["refused"] >= clients - blocks
        refused = sum(isinstance(e, ta.OutOfStateBlocks) for e in server.errors)
        assert refused == outcomes["refused"]
        assert fd_count() <= fds_before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
