"""``tlsattach serve`` when things break: each fault is survived, ends only its connection, and
is logged as exactly one line.

The per-connection code of ``serve`` (``_cli._tunnel``) runs behind a real TLSListener on
127.0.0.1:0 in this process, with backends that misbehave on purpose: one that dies mid-stream,
one that never accepts, one that accepts and never answers. Deadlines run on trio's MockClock,
so a 10 s connect timeout or a 30 s idle timeout takes no real time. A connection that failed
must reach its client as an error (a reset), never as a clean close_notify that would make a
cut stream look whole. Then a crowd where some clients vanish mid-record, and the real command
stopped by SIGTERM while 1,000 connections are live.
"""

from __future__ import annotations

import functools
import logging
import re
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from test_load import raise_fd_limit
from test_reliability import fd_count, handshaken_then, reset_mid_record, task_count

import trio_tlsattach as ta
from trio_tlsattach._cli import _tunnel
from trio_tlsattach._tunnel import Endpoint, echo, open_endpoint

RST = struct.pack("ii", 1, 0)
LOGGER = "trio_tlsattach"
Opener = Callable[[], Awaitable[Any]]


def connection_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The per-connection log lines (``peer version cipher alpn in= out= seconds how``)."""
    return [r.getMessage() for r in caplog.records if " in=" in r.getMessage()]


async def listen() -> tuple[trio.SocketListener, int]:
    raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    return raw, raw.socket.getsockname()[1]


async def serve_tunnel(
    cert: trustme.LeafCert,
    open_far: Opener | None,
    idle: float | None = None,
    pool: ta.StateBlockPool | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``serve``'s connection handling on 127.0.0.1:0; reports the port."""
    raw, port = await listen()
    listener = ta.TLSListener(raw, ta.TLSServerLayer(cert), pool=pool)
    task_status.started(port)  # already listening: connections wait in the backlog
    await listener.serve(lambda tls: _tunnel(tls, open_far, idle))


def backend(port: int, timeout: float = 10) -> Opener:
    """How serve opens ``tcp:127.0.0.1:port`` with ``--connect-timeout timeout``."""
    endpoint = Endpoint("tcp", host="127.0.0.1", port=port)
    return lambda: open_endpoint(endpoint, ta.after(timeout))


async def tls_client(port: int, ca: trustme.CA) -> ta.TLSStream:
    raw = await ta.open_tcp("127.0.0.1", port)
    return await ta.TLSClientLayer(ca, server_hostname="localhost").attach(raw, ta.after(30))


async def seconds_until_cut(port: int, ca: trustme.CA, request: bytes) -> float:
    """Send ``request``, then wait for the tunnel to give up: a reset, never a clean end."""
    async with await tls_client(port, ca) as tls:
        await tls.send_all(request)
        start = trio.current_time()
        with pytest.raises(ta.ConnectionBroken):
            await tls.receive_some()
        return trio.current_time() - start


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)


async def test_backend_dies_mid_stream(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    forwarded = trio.Event()

    async def dying(stream: trio.SocketStream) -> None:
        assert await stream.receive_some(5) == b"hello"
        await stream.send_all(b"partial")
        await forwarded.wait()  # the client has it: now the backend process "crashes"
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        await stream.aclose()

    raw, backend_port = await listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, dying, [raw])
        port = await nursery.start(serve_tunnel, tls_server_cert, backend(backend_port))
        async with await tls_client(port, tls_ca) as tls:
            await tls.send_all(b"hello")
            assert await tls.receive_some() == b"partial"
            forwarded.set()
            with pytest.raises(ta.ConnectionBroken, match="reset"):  # not a clean end
                await tls.receive_some()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    [line] = connection_lines(caplog)
    assert re.search(r"in=5 out=7 \S+ error: .*reset", line, re.IGNORECASE), line


async def test_backend_that_never_accepts(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    with socket.socket() as full, socket.socket() as queued:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # one connection fits in the accept queue; later SYNs are dropped
        queued.connect(full.getsockname())
        backend_port = full.getsockname()[1]
        async with trio.open_nursery() as nursery:
            opener = backend(backend_port, timeout=10)
            port = await nursery.start(serve_tunnel, tls_server_cert, opener)
            waited = await seconds_until_cut(port, tls_ca, b"anyone there?")
            assert waited == pytest.approx(10, abs=0.5)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    [line] = connection_lines(caplog)
    assert line.endswith(f"error: tcp:127.0.0.1:{backend_port} did not accept in time"), line


async def test_backend_that_never_answers_hits_the_idle_deadline(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        while await stream.receive_some():
            continue  # reads everything, answers nothing

    raw, backend_port = await listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, silent, [raw])
        port = await nursery.start(serve_tunnel, tls_server_cert, backend(backend_port), 30)
        assert await seconds_until_cut(port, tls_ca, b"request") == pytest.approx(30, abs=0.5)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    [line] = connection_lines(caplog)
    assert re.search(r"in=7 out=0 \S+ error: idle for 30 s$", line), line


async def test_idle_deadline_is_rearmed_by_traffic(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
) -> None:
    """A client that speaks every 20 s outlives a 30 s idle deadline: only silence counts."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tunnel, tls_server_cert, None, 30)  # echo backend
        async with await tls_client(port, tls_ca) as tls:
            for n in range(5):
                await trio.sleep(20)
                await tls.send_all(b"tick %d" % n)
                assert await tls.receive_some() == b"tick %d" % n
            await tls.send_eof()
            assert await tls.receive_some() == b""  # a clean end: the close_notify
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    [line] = connection_lines(caplog)
    assert line.endswith(" clean"), line


async def test_clients_vanishing_mid_record_under_load(
    caplog: pytest.LogCaptureFixture, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """100 clients echo 64 KiB each through a TCP backend while 50 others reset halfway
    through a record: every good echo is whole, each connection gets one line, nothing
    leaks."""
    good, hostile, size = 100, 50, 65536
    payload = bytes(range(256)) * (size // 256)
    pool = ta.StateBlockPool(good + hostile)

    async def echo_backend(stream: trio.SocketStream) -> None:
        async with ta.wrap_stream(stream) as wrapped:
            await echo(wrapped)  # type: ignore[arg-type]

    async def good_client(port: int) -> None:
        async with await tls_client(port, tls_ca) as tls:
            async with trio.open_nursery() as both:

                async def send() -> None:
                    await tls.send_all(payload)
                    await tls.send_eof()

                both.start_soon(send)
                received = bytearray()
                while data := await tls.receive_some():
                    received += data
            assert received == payload

    raw, backend_port = await listen()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, echo_backend, [raw])
            port = await nursery.start(
                functools.partial(serve_tunnel, pool=pool), tls_server_cert, backend(backend_port)
            )
            await trio.testing.wait_all_tasks_blocked()
            fds, tasks = fd_count(), task_count()
            async with trio.open_nursery() as crowd:
                for n in range(good + hostile):
                    if n % 3 == 2:
                        crowd.start_soon(handshaken_then, port, tls_ca, reset_mid_record)
                    else:
                        crowd.start_soon(good_client, port)
            while pool.in_use or task_count() > tasks:  # the server's last closes
                await trio.sleep(0.01)
            assert fd_count() == fds
            nursery.cancel_scope.cancel()
    lines = connection_lines(caplog)
    assert len(lines) == good + hostile
    assert sum(line.endswith(" clean") for line in lines) == good
    assert sum(" error: " in line for line in lines) == hostile
    assert all(line.startswith("127.0.0.1:") for line in lines)  # read before any reset


@pytest.mark.slow
async def test_sigterm_with_1000_live_connections(tmp_path: Path, tls_ca: trustme.CA) -> None:
    """SIGTERM: every live connection gets a close_notify, the log one line each, exit 0."""
    clients = 1000
    soft, hard = raise_fd_limit(clients + 200)
    log_path = tmp_path / "serve.log"
    try:
        with log_path.open("wb") as log_file:
            server = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_tlsattach", "serve", "--listen", "127.0.0.1:0"],
                stdout=-1,  # subprocess.PIPE
                stderr=log_file,
            )
        try:
            port, ca = await read_banner(server)
            layer = ta.TLSClientLayer(ca, server_hostname="localhost", session_cache=False)
            live = 0
            everyone_live = trio.Event()
            closed_at: list[float] = []

            async def client() -> None:
                nonlocal live
                raw = await ta.open_tcp("127.0.0.1", port)
                async with await layer.attach(raw, ta.after(60)) as tls:
                    await tls.send_all(b"x")
                    assert await tls.receive_some() == b"x"
                    live += 1
                    if live == clients:
                        everyone_live.set()
                    assert await tls.receive_some() == b""  # close_notify, not a reset
                    closed_at.append(time.monotonic())

            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    for _ in range(clients):
                        nursery.start_soon(client)
                    await everyone_live.wait()
                    signalled = time.monotonic()
                    server.send_signal(signal.SIGTERM)
                status = await server.wait()
            took = time.monotonic() - signalled
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = log_path.read_text()
    assert status == 0, log[-2000:]
    assert len(closed_at) == clients
    assert took < 30, took
    assert log.count("SIGTERM: shutting down") == 1
    assert len(re.findall(r" in=1 out=1 \S+ shutdown$", log, re.MULTILINE)) == clients, log[-2000:]
    logging.getLogger("test_faults").warning(
        "SIGTERM with %d live connections: all closed with close_notify in %.2f s", clients, took
    )


async def read_banner(server: trio.Process) -> tuple[int, str]:
    """The port and CA path ``serve`` prints (its first two lines)."""
    assert server.stdout is not None
    text = b""
    with trio.fail_after(20):
        while b"CA certificate:" not in text or not text.endswith(b"\n"):
            chunk = await server.stdout.receive_some()
            assert chunk, text
            text += chunk
    port = re.search(rb"listening on 127\.0\.0\.1:(\d+)", text)
    ca = re.search(rb"CA certificate: (\S+)", text)
    assert port is not None
    assert ca is not None
    return int(port.group(1)), ca.group(1).decode()
