"""Interop with CPython's blocking ``ssl.SSLSocket`` (in a thread), both directions.

The point here is the clean shutdown: ``SSLSocket.unwrap()`` on one end, our ``detach`` on the
other, then plaintext on the very same TCP connection. TLS 1.2 and 1.3; ALPN and SNI are
checked on both ends; and session resumption against a server that is not ours. The thread's
sockets have timeouts, so it always ends by itself.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

import pytest
import trio
from _tls_helpers import receive_exactly

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, Certs, tcp_listener

pytestmark = pytest.mark.interop

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


async def run_in_thread(target: Callable[[], None]) -> None:
    """Run a blocking peer in a thread; its exception, if any, is re-raised here."""
    failure: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    with trio.fail_after(TOOL_TIMEOUT + 5):  # the thread's own socket timeouts come first
        await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
    if failure:
        raise failure[0]


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, "end of stream"
        got += chunk
    return got


def server_context(certs: Certs, version: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs.cert_path), str(certs.key_path))
    context.maximum_version = context.minimum_version = VERSIONS[version]
    context.set_alpn_protocols(["x-test"])
    return context


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_sslsocket_client_unwrap_then_plaintext(version: str, certs: Certs) -> None:
    """Our server, CPython's client: TLS, unwrap() against our detach, then plaintext."""
    listener, port = await tcp_listener()
    context = ssl.create_default_context(cafile=str(certs.ca_path))
    context.maximum_version = context.minimum_version = VERSIONS[version]
    context.set_alpn_protocols(["x-test", "http/1.1"])
    outcome: dict[str, object] = {}

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=TOOL_TIMEOUT) as sock:
            tls = context.wrap_socket(sock, server_hostname="localhost")
            outcome.update(alpn=tls.selected_alpn_protocol(), version=tls.version())
            tls.sendall(b"over tls")
            outcome["reply"] = recv_exactly(tls, 9)
            plain = tls.unwrap()  # close_notify both ways
            plain.sendall(b"plaintext now")
            outcome["plain_reply"] = recv_exactly(plain, 11)
            plain.close()

    seen: dict[str, object] = {}

    async def server() -> None:
        raw = await listener.accept()
        tls = await ta.TLSServerLayer(certs.leaf, alpn=["x-test"]).attach(raw, ta.after(20))
        seen.update(sni=tls.server_hostname, alpn=tls.alpn, version=tls.tls_version)
        assert await receive_exactly(tls, 8) == b"over tls"
        await tls.send_all(b"tls reply")
        tcp = await tls.detach(ta.after(TOOL_TIMEOUT))
        assert isinstance(tcp, ta.ByteStream)
        assert tls.unread_data == b""
        assert await receive_exactly(tcp, 13) == b"plaintext now"
        await tcp.send_all(b"plain reply")
        await tcp.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_thread, client)
        with trio.fail_after(TOOL_TIMEOUT):
            await server()
    await listener.aclose()
    expected_version = f"TLSv{version}"
    assert outcome == {
        "alpn": "x-test",
        "version": expected_version,
        "reply": b"tls reply",
        "plain_reply": b"plain reply",
    }
    assert seen == {"sni": "localhost", "alpn": "x-test", "version": expected_version}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_against_sslsocket_server_unwrap(version: str, certs: Certs) -> None:
    """Our client, CPython's server: our detach against its unwrap(), then plaintext."""
    context = server_context(certs, version)
    sni: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni.append(name)

    context.sni_callback = record_sni
    listening = socket.create_server(("127.0.0.1", 0))
    listening.settimeout(TOOL_TIMEOUT)
    port = listening.getsockname()[1]
    outcome: dict[str, object] = {}

    def server() -> None:
        with listening:
            conn, _ = listening.accept()
        with conn:
            conn.settimeout(TOOL_TIMEOUT)
            tls = context.wrap_socket(conn, server_side=True)
            outcome.update(alpn=tls.selected_alpn_protocol(), version=tls.version())
            outcome["got"] = recv_exactly(tls, 5)
            tls.sendall(b"hello from cpython")
            plain = tls.unwrap()
            plain.sendall(b"raw from cpython")
            outcome["raw"] = recv_exactly(plain, 12)
            plain.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_thread, server)
        with trio.fail_after(TOOL_TIMEOUT):
            raw = await ta.open_tcp("127.0.0.1", port)
            layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["x-test"])
            tls = await layer.attach(raw, ta.after(TOOL_TIMEOUT))
            assert (tls.tls_version, tls.alpn) == (f"TLSv{version}", "x-test")
            await tls.send_all(b"hello")
            assert await receive_exactly(tls, 18) == b"hello from cpython"
            tcp = await tls.detach(ta.after(TOOL_TIMEOUT))
            assert tcp is raw
            # may have come in one segment with the close_notify: handed back in front
            assert await receive_exactly(tcp, 16) == b"raw from cpython"
            await tcp.send_all(b"raw from us!")
            await tcp.aclose()
    assert outcome == {
        "alpn": "x-test",
        "version": f"TLSv{version}",
        "got": b"hello",
        "raw": b"raw from us!",
    }
    assert sni == ["localhost"]


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_resumes_a_session_with_cpython(version: str, certs: Certs) -> None:
    """Session resumption against another server: the second connection is resumed."""
    context = server_context(certs, version)
    listening = socket.create_server(("127.0.0.1", 0))
    listening.settimeout(TOOL_TIMEOUT)
    port = listening.getsockname()[1]
    resumed: list[bool | None] = []  # SSLSocket.session_reused is None when unconnected

    def server() -> None:
        with listening:
            for _ in range(2):
                conn, _ = listening.accept()
                conn.settimeout(TOOL_TIMEOUT)
                with context.wrap_socket(conn, server_side=True) as tls:
                    resumed.append(tls.session_reused)
                    tls.sendall(b"hi")  # in 1.3 the tickets go out before this
                    assert tls.recv(10) == b""  # until our close

    layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_in_thread, server)
        with trio.fail_after(TOOL_TIMEOUT):
            for _ in range(2):
                tls = await layer.attach(await ta.open_tcp("127.0.0.1", port))
                assert await receive_exactly(tls, 2) == b"hi"
                reused = tls.session_reused
                await tls.aclose()  # hands its session to the layer's cache
    assert resumed == [False, True]
    assert reused
