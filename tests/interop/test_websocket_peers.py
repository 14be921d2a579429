"""The WebSocket layer against peers no one here wrote: websockets, trio-websocket, curl.

websockets runs its own threaded (sync) server and client in a worker thread; trio-websocket
runs in-process on Trio. Each exchange covers text, binary, a 1 MiB message, a ping each way
where the peer lets us, and a close with status 1000 "OK" in both directions; ``wss`` variants
put our TLS layer (or ``ssl``) under it with a trustme certificate. curl checks the ``101``
answer byte for byte (RFC 6455's example key) and that a malformed upgrade gets a ``400``.
Everything listens on 127.0.0.1, port 0.
"""

from __future__ import annotations

import errno
import gc
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
import trio_websocket
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

import trio_tlsattach as ta
from trio_tlsattach._ws import WS_BINARY, WebSocketError, WSLayer, WSStream, ws_attach_client
from trio_tlsattach._wsrelay import ws_relay

from .conftest import TOOL_TIMEOUT, Tools, need, tcp_listener

pytestmark = pytest.mark.interop

MIB = 1 << 20
TEXT = "text, with UTF-8: é ☃ 𝄞"
BINARY = bytes(range(256)) * 4
BIG = bytes(i % 251 for i in range(MIB))
EXCHANGE: list[str | bytes] = [TEXT, BINARY, BIG]


# --- our server, peers as clients -------------------------------------------------------------


async def _our_server(
    listener: trio.SocketListener, ctx: ssl.SSLContext | None, seen: dict[str, Any]
) -> None:
    """Accept one client (TLS first if ``ctx``), echo its messages, close 1000 "OK"."""
    with trio.fail_after(TOOL_TIMEOUT):
        stream: Any = await listener.accept()
        if ctx is not None:
            stream = await ta.TLSServerLayer(ctx).attach(stream)
        ws = await WSLayer(server_side=True, max_size=2 * MIB).attach(stream)
        seen.update(resource=ws.resource, host=ws.host)
        while (message := await ws.receive()) is not None:
            await ws.send(message)
        seen.update(status=ws.close_status, reason=ws.close_reason)
        below = await ws.detach(status=1000, reason="OK")
        await below.aclose()


def _websockets_client(uri: str, ctx: ssl.SSLContext | None) -> dict[str, Any]:
    """websockets' sync client: the exchange, a ping, a close 1000 "OK"; what it saw."""
    got: dict[str, Any] = {"echoed": []}
    extra: dict[str, Any] = {"ssl": ctx, "server_hostname": "localhost"} if ctx else {}
    with connect(uri, max_size=2 * MIB, open_timeout=TOOL_TIMEOUT, **extra) as ws:
        for message in EXCHANGE:
            ws.send(message)
            got["echoed"].append(ws.recv(timeout=TOOL_TIMEOUT))
        got["pong"] = ws.ping(b"are you there").wait(TOOL_TIMEOUT)
        ws.close(1000, "OK")
        got.update(status=ws.close_code, reason=ws.close_reason)
    return got


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_websockets_client_against_our_server(
    secure: bool, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    listener, port = await tcp_listener()
    seen: dict[str, Any] = {}
    uri = f"{'wss' if secure else 'ws'}://127.0.0.1:{port}/chat?room=1"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_our_server, listener, server_ssl_context if secure else None, seen)
        got = await trio.to_thread.run_sync(
            _websockets_client, uri, client_ssl_context if secure else None
        )
    await listener.aclose()
    assert got["echoed"] == EXCHANGE  # text came back as str, binary as bytes
    assert got["pong"] is True
    assert (got["status"], got["reason"]) == (1000, "OK")
    assert (seen["status"], seen["reason"]) == (1000, "OK")
    assert seen["resource"] == "/chat?room=1"
    assert seen["host"] == f"127.0.0.1:{port}"


async def test_trio_websocket_client_against_our_relay(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """wss: trio-websocket's client through our TLS and ws_relay (echo)."""
    listener, port = await tcp_listener()
    counts = [0, 0]

    async def serve_one() -> None:
        tls = await ta.TLSServerLayer(server_ssl_context).attach(await listener.accept())
        await ws_relay(tls, None, counts)
        await tls.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        with trio.fail_after(TOOL_TIMEOUT):
            async with trio_websocket.open_websocket(
                "localhost", port, "/echo", use_ssl=client_ssl_context, max_message_size=2 * MIB
            ) as ws:
                for message in EXCHANGE:
                    await ws.send_message(message)
                    assert await ws.get_message() == message
                await ws.ping(b"trio-websocket ping")  # returns once the pong came
            assert ws.closed is not None
            assert ws.closed.code == 1000
    await listener.aclose()
    assert counts == [sum(len(m if isinstance(m, bytes) else m.encode()) for m in EXCHANGE)] * 2


def _websockify_client(uri: str, ctx: ssl.SSLContext) -> dict[str, Any]:
    got: dict[str, Any] = {"echoed": []}
    with connect(uri, ssl=ctx, server_hostname="localhost", open_timeout=TOOL_TIMEOUT) as ws:
        for message in (b"binary through", "text through"):
            ws.send(message)
            got["echoed"].append(ws.recv(timeout=TOOL_TIMEOUT))
        ws.close(1000, "OK")
        got["status"] = ws.close_code
    return got


async def test_websockets_client_through_our_relay_to_a_tcp_backend(
    server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    """websockify's use: wss in front, each message's bytes to a plain TCP backend and back."""
    listener, port = await tcp_listener()
    backend, backend_port = await tcp_listener()
    counts = [0, 0]

    async def serve_backend() -> None:
        raw = await backend.accept()
        while chunk := await raw.receive_some():
            await raw.send_all(chunk)
        await raw.send_eof()
        await raw.aclose()

    async def serve_front() -> None:
        conn = await ta.TLSServerLayer(server_ssl_context).attach(await listener.accept())
        await ws_relay(conn, lambda: ta.open_tcp("127.0.0.1", backend_port), counts)
        await conn.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_backend)
        nursery.start_soon(serve_front)
        got = await trio.to_thread.run_sync(
            _websockify_client, f"wss://127.0.0.1:{port}/", client_ssl_context
        )
    await listener.aclose()
    await backend.aclose()
    assert got == {"echoed": [b"binary through", b"text through"], "status": 1000}
    assert counts == [26, 26]


# --- peers as servers, our client ---------------------------------------------------------------


@contextmanager
def _websockets_server(ctx: ssl.SSLContext | None, seen: dict[str, Any]) -> Iterator[int]:
    """websockets' threaded server: echoes, pings the client first; yields its port."""

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.update(path=ws.request.path, host=ws.request.headers["Host"])
        pong = ws.ping(b"from websockets")
        for message in ws:
            ws.send(message)
        seen.update(pong=pong.is_set(), status=ws.close_code, reason=ws.close_reason)

    with serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=2 * MIB) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(TOOL_TIMEOUT)
    # serve_forever leaves its selector (an epoll fd) for the garbage collector to close:
    # close it now, not in the middle of a later test that counts file descriptors.
    gc.collect()


async def _our_client_exchange(ws: WSStream) -> None:
    """The exchange from our side: each message echoed with its type, a ping, close 1000 "OK"."""
    for message in EXCHANGE:
        await ws.send(message)
        assert await ws.receive() == message
    await ws.ping(b"from us")
    await ws.send(b"after the ping")
    assert await ws.receive() == b"after the ping"  # the pong was read on the way
    assert ws.pongs_received == 1
    await ws.send_eof(status=1000, reason="OK")
    assert await ws.receive() is None
    assert (ws.close_status, ws.close_reason) == (1000, "OK")


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_our_client_against_websockets_server(
    secure: bool, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    seen: dict[str, Any] = {}
    with _websockets_server(server_ssl_context if secure else None, seen) as port:
        with trio.fail_after(TOOL_TIMEOUT):
            stream: Any = await ta.open_tcp("127.0.0.1", port)
            if secure:
                layer = ta.TLSClientLayer(client_ssl_context, server_hostname="localhost")
                stream = await layer.attach(stream)
            ws = await WSLayer(resource="/feed", host="example.test", max_size=2 * MIB).attach(
                stream
            )
            await _our_client_exchange(ws)
            below = await ws.detach()
            assert below is stream
            if not secure:  # websockets closes TCP after the close handshake
                assert await below.receive_some() == b""
            await below.aclose()  # (over TLS it waits for our close_notify first)
    assert seen == {
        "path": "/feed",
        "host": "example.test",
        "pong": True,  # we answered its ping while receiving
        "status": 1000,
        "reason": "OK",
    }


@asynccontextmanager
async def _trio_websocket_server(seen: dict[str, Any]) -> AsyncIterator[int]:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        seen["path"] = request.path
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed as exc:
            seen["closed"] = exc.reason
        seen.update(status=ws.closed.code if ws.closed else None)
        seen.update(reason=ws.closed.reason if ws.closed else None)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        try:
            yield server.port
        finally:
            nursery.cancel_scope.cancel()


async def test_our_client_against_trio_websocket_server() -> None:
    seen: dict[str, Any] = {}
    async with _trio_websocket_server(seen) as port:
        with trio.fail_after(TOOL_TIMEOUT):
            tcp = await ta.open_tcp("127.0.0.1", port)
            ws = await ws_attach_client(tcp, WS_BINARY, "/tw", "localhost")
            await _our_client_exchange(ws)
            await ws.aclose()
    assert seen.pop("closed") is not None
    assert seen == {"path": "/tw", "status": 1000, "reason": "OK"}


# --- curl: the HTTP upgrade itself ------------------------------------------------------------


def _curl(port: int, *headers: str) -> list[str]:
    argv = [need("curl"), "--silent", "--include", "--no-buffer", "--max-time", "10"]
    for header in headers:
        argv += ["-H", header]
    return [*argv, f"http://127.0.0.1:{port}/from-curl"]


async def test_curl_upgrade_gets_101(tools: Tools) -> None:
    listener, port = await tcp_listener()
    seen: dict[str, Any] = {}

    async def serve_one() -> None:
        ws = await WSLayer(server_side=True).attach(await listener.accept(), ta.after(10))
        seen["resource"] = ws.resource
        await ws.send("hello curl")
        await ws.send_eof(status=1000, reason="bye")
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        curl = await tools.start(
            _curl(
                port,
                "Connection: Upgrade",
                "Upgrade: websocket",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",  # RFC 6455, section 1.3
                "Sec-WebSocket-Version: 13",
            )
        )
        assert await curl.expect(rb"\x88\x05\x03\xe8bye"), curl.text()  # our close frame
    await curl.wait()
    await listener.aclose()
    assert curl.output.startswith(b"HTTP/1.1 101 "), curl.text()
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in curl.output
    assert b"\r\n\r\n\x81\x0ahello curl" in curl.output  # the first frame follows the header
    assert seen["resource"] == "/from-curl"


async def test_curl_malformed_upgrade_gets_400(tools: Tools) -> None:
    listener, port = await tcp_listener()
    errors: list[WebSocketError] = []

    async def serve_one() -> None:
        raw = await listener.accept()
        try:
            await WSLayer(server_side=True).attach(raw, ta.after(10))
        except WebSocketError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_one)
        curl = await tools.start(_curl(port, "Connection: Upgrade", "Upgrade: websocket"))
        await curl.wait()
    await listener.aclose()
    assert curl.output.startswith(b"HTTP/1.1 400 "), curl.text()
    assert len(errors) == 1
    assert errors[0].errno == errno.EPROTO
