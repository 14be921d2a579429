"""The proxy that ``tlsattach socks5`` runs: ``socks5_proxy_connection`` against real loopback
targets (relaying, the reply for each failure, the bound address, the idle timeout), and
``serve_socks5`` (its limit, its log lines, hostile clients, SOCKS behind TLS with TLS inside).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _socks5_helpers import run_both
from _tls_helpers import receive_exactly

import trio_tlsattach as ta
from trio_tlsattach._cores.socks5 import encode_reply
from trio_tlsattach._socks5proxy import reply_for

# -- the proxy: socks5_proxy_connection ----------------------------------------------------------


@asynccontextmanager
async def echo_target() -> AsyncIterator[int]:
    """A loopback TCP echo server; yields its port."""

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def through_proxy(
    client: Callable[[ta.ByteStream], Awaitable[object]],
    credentials: tuple[str, str] | None = None,
    deadline: float = 10,
) -> tuple[BaseException | None, BaseException | None, list[int]]:
    """Run ``client`` against ``socks5_proxy_connection`` over a socketpair."""
    c, p = ta.socketpair()
    counts = [0, 0]

    async def client_side() -> None:
        async with c:
            await client(c)

    async def proxy_side() -> None:
        async with p:
            await ta.socks5_proxy_connection(
                p, credentials=credentials, connect_deadline=ta.after(deadline), counts=counts
            )

    client_error, proxy_error = await run_both(client_side, proxy_side)
    return client_error, proxy_error, counts


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_proxy_connects_and_relays(host: str) -> None:
    async with echo_target() as port:

        async def client(c: ta.ByteStream) -> None:
            s = await ta.socks5_client_connectbyname(c, "u", "p", host, port, ta.after(5))
            await s.send_all(b"x" * 100_000)
            await s.send_eof()
            got = bytearray()
            while data := await s.receive_some():
                got += data
            assert got == b"x" * 100_000

        assert await through_proxy(client, ("u", "p")) == (None, None, [100_000, 100_000])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NOT_SUPPORTED, BAD_TYPE = ta.SOCKS5_COMMAND_NOT_SUPPORTED, ta.SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED
TO_127 = b"\x00\x01\x7f\x00\x00\x01\x00\x50"  # RSV, ATYP, 127.0.0.1, port 80


@pytest.mark.parametrize(
    ("request_", "reply", "error"),
    [
        (b"\x05\x02" + TO_127, NOT_SUPPORTED, ta.NotSupported),
        (b"\x05\x03" + TO_127, NOT_SUPPORTED, ta.NotSupported),
        (b"\x05\x09" + TO_127, NOT_SUPPORTED, ta.SOCKS5ProtocolError),
        (b"\x05\x01\x00\x02\x00", BAD_TYPE, ta.SOCKS5ProtocolError),
    ],
    ids=["bind", "udp-associate", "unknown-command", "unknown-address-type"],
)
async def test_proxy_answers_what_it_cannot_serve(
    request_: bytes, reply: int, error: type[Exception]
) -> None:
    answers: list[bytes] = []

    async def client(c: ta.ByteStream) -> None:
        await c.send_all(b"\x05\x01\x00" + request_)
        while data := await c.receive_some():
            answers.append(data)

    client_error, proxy_error, _ = await through_proxy(client)
    assert client_error is None
    assert isinstance(proxy_error, error)
    assert b"".join(answers) == b"\x05\x00" + encode_reply(reply)


async def test_proxy_refusals_reach_the_client_as_its_errno(
    autojump_clock: trio.testing.MockClock,
) -> None:
    refused_port = free_port()

    class Resolver(trio.abc.HostnameResolver):
        async def getaddrinfo(self, host: bytes | None, port: Any, *args: Any) -> Any:
            if host == b"slow.test":
                await trio.sleep_forever()
            raise socket.gaierror(socket.EAI_NONAME, "no such name")

        async def getnameinfo(self, *args: Any) -> Any:  # pragma: no cover - unused
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(Resolver())
    try:
        for host, port, code in [
            ("127.0.0.1", refused_port, errno.ECONNREFUSED),
            ("nowhere.test", 80, errno.EHOSTUNREACH),
            ("slow.test", 80, errno.ETIMEDOUT),
        ]:

            async def client(c: ta.ByteStream, host: str = host, port: int = port) -> None:
                await ta.socks5_client_connectbyname(c, None, None, host, port)

            client_error, proxy_error, _ = await through_proxy(client, deadline=3)
            assert isinstance(client_error, ta.SOCKS5ReplyError)
            assert client_error.errno == code
            assert isinstance(proxy_error, OSError)
        c, p = ta.socketpair()
        async with c, p:
            await c.send_all(b"\x05\x01\x00\x03\x0cnowhere.test\x00\x50")
            with pytest.raises(ta.SOCKS5ResolveError) as info:
                await ta.socks5_proxy_recvcommand(p, ta.after(1))
            assert info.value.errno == errno.EADDRNOTAVAIL
    finally:
        trio.socket.set_custom_hostname_resolver(None)


async def test_proxy_reports_the_bound_address_and_ends_an_idle_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with echo_target() as port:
        c, p = ta.socketpair()
        async with c, p:
            counts = [0, 0]
            await c.send_all(
                b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big")
            )
            await c.send_all(b"ping")  # early bytes: relayed, then silence
            start = trio.current_time()
            with pytest.raises(ta.DeadlineExceeded):
                await ta.socks5_proxy_connection(
                    p,
                    credentials=None,
                    connect_deadline=ta.after(5),
                    counts=counts,
                    idle_timeout=30,
                )
            assert trio.current_time() - start == pytest.approx(30, abs=0.1)
            assert counts == [4, 4]
            answer = await receive_exactly(c, 16)
            assert answer[:7] == b"\x05\x00\x05\x00\x00\x01\x7f"  # success, bound on 127.x
            assert int.from_bytes(answer[10:12], "big") not in (0, port)
            assert answer[12:] == b"ping"


def test_reply_for() -> None:
    grouped = OSError("all attempts failed")
    grouped.__cause__ = ExceptionGroup("x", [OSError(errno.ENETUNREACH, "no route")])
    assert reply_for(grouped) == ta.SOCKS5_NETWORK_UNREACHABLE
    assert reply_for(ta.DeadlineExceeded()) == ta.SOCKS5_TTL_EXPIRED
    assert reply_for(OSError(errno.EPERM, "firewall")) == ta.SOCKS5_CONNECTION_NOT_ALLOWED
    assert reply_for(OSError(errno.EMFILE, "fds")) == ta.SOCKS5_GENERAL_FAILURE


# -- serve_socks5: limits, logging, SOCKS over TLS -----------------------------------------------


async def test_serve_limits_connections_and_logs_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trio_tlsattach")
    async with echo_target() as port, trio.open_nursery() as nursery:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        proxy_port = listener.socket.getsockname()[1]
        await nursery.start(
            lambda task_status: ta.serve_socks5(
                listener, max_connections=1, task_status=task_status
            )
        )
        first = await ta.socks5_client_connectbyname(
            await ta.open_tcp("127.0.0.1", proxy_port), None, None, "127.0.0.1", port, ta.after(5)
        )
        second = await ta.open_tcp("127.0.0.1", proxy_port)
        with pytest.raises(ta.ConnectionBroken):
            await ta.socks5_client_connect(second, None, None, ("127.0.0.1", port), ta.after(5))
        await first.send_all(b"ping")
        assert await first.receive_some() == b"ping"
        await first.aclose()
        await second.aclose()
        with trio.fail_after(5):
            while "clean" not in caplog.text:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert "refused: 1 connections already" in caplog.text
    assert f"-> 127.0.0.1:{port} in=4 out=4" in caplog.text


async def test_serve_survives_hostile_clients(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trio_tlsattach")
    async with echo_target() as port, trio.open_nursery() as nursery:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        proxy_port = listener.socket.getsockname()[1]
        await nursery.start(partial(ta.serve_socks5, listener, credentials=("u", "p")))
        for garbage in [b"GET / HTTP/1.1\r\n\r\n", b"\x05\x01", b"\x05\x01\x02\x01\x01u\x01x"]:
            async with await ta.open_tcp("127.0.0.1", proxy_port) as hostile:
                await hostile.send_all(garbage)
                await hostile.send_eof()
                while await hostile.receive_some():
                    pass  # until the proxy closes
        s = await ta.open_tcp("127.0.0.1", proxy_port)
        async with s:
            await ta.socks5_client_connect(s, "u", "p", ("127.0.0.1", port), ta.after(5))
            await s.send_all(b"still serving")
            assert await s.receive_some() == b"still serving"
        nursery.cancel_scope.cancel()
    assert "error: greeting: version byte 0x47" in caplog.text
    assert "error: the peer closed the stream in the SOCKS5 handshake" in caplog.text
    assert "error: wrong username or password for 'u'" in caplog.text


async def test_socks_over_tls_then_tls_to_the_target(
    tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    async def tls_echo(stream: trio.SocketStream) -> None:
        tls = await ta.tls_attach_server(stream, tls_server_cert, None, ta.after(5))
        async with tls:
            while data := await tls.receive_some():
                await tls.send_all(data)

    async with trio.open_nursery() as nursery:
        target = (await nursery.start(partial(trio.serve_tcp, tls_echo, 0, host="127.0.0.1")))[0]
        raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        proxy_port = raw.socket.getsockname()[1]
        listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
        await nursery.start(
            lambda task_status: ta.serve_socks5(
                listener, credentials=("alice", "s3cret"), task_status=task_status
            )
        )
        outer = await ta.tls_attach_client(
            await ta.open_tcp("127.0.0.1", proxy_port),
            ta.after(5),
            context=tls_ca,
            server_hostname="localhost",
        )
        port = target.socket.getsockname()[1]
        tunnel = await ta.socks5_client_connectbyname(
            outer, "alice", "s3cret", "localhost", port, ta.after(5)
        )
        inner = await ta.tls_attach_client(
            tunnel, ta.after(5), context=tls_ca, server_hostname="localhost"
        )
        async with inner:
            await inner.send_all(b"TLS in TLS")
            assert await inner.receive_some() == b"TLS in TLS"
            assert inner.below is outer  # tcp > tls (to the proxy) > tls (to the target)
        nursery.cancel_scope.cancel()
