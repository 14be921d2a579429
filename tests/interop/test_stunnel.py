"""Interop with stunnel, the TLS tunnel many of our users run today, both ways.

stunnel as a client: plaintext into it comes out of our TLS server; when the plaintext side
ends, stunnel sends close_notify, which is a clean end of stream here, and our server can then
detach. stunnel as a server in front of a plaintext echo: our client sends and reads 1 MiB
through it, then detaches, and stunnel answers our close_notify with its own, so the TCP
stream comes back whole. TLS 1.2 and 1.3 each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from _tls_helpers import receive_exactly

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, Certs, Tools, need, tcp_listener

pytestmark = pytest.mark.interop

DATA = os.urandom(1024 * 1024)


async def start_stunnel(tools: Tools, tmp_path: Path, version: str, service: str) -> int:
    """stunnel with one service (``service``: its config lines) on a port picked here; the
    port, once stunnel listens."""
    stunnel = need("stunnel")

    def make_argv(port: int) -> list[str]:
        config = tmp_path / f"stunnel-{port}.conf"
        config.write_text(
            "foreground = yes\npid =\ndebug = notice\n"
            f"[tunnel]\naccept = 127.0.0.1:{port}\n{service}"
            f"sslVersionMin = TLSv{version}\nsslVersionMax = TLSv{version}\n"
        )
        return [stunnel, str(config)]

    _, port = await tools.start_listening(make_argv, rb"Configuration successful")
    return port


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_stunnel_client_to_our_server(
    version: str, certs: Certs, tools: Tools, tmp_path: Path
) -> None:
    listener, our_port = await tcp_listener()
    service = (
        f"client = yes\nconnect = 127.0.0.1:{our_port}\nCAfile = {certs.ca_path}\n"
        "verifyChain = yes\ncheckHost = localhost\nsni = localhost\n"
    )
    port = await start_stunnel(tools, tmp_path, version, service)
    seen: dict[str, object] = {}

    async def serve() -> None:
        tls = await ta.TLSServerLayer(certs.leaf).attach(await listener.accept())
        seen["version"] = tls.tls_version
        got = bytearray()
        while chunk := await tls.receive_some():  # b"": stunnel's close_notify
            got += chunk
            await tls.send_all(chunk)
        seen["got"] = bytes(got)
        tcp = await tls.detach(ta.after(TOOL_TIMEOUT))  # the peer's close_notify is in
        seen["detached"] = tcp.label()
        await tcp.aclose()

    with trio.fail_after(TOOL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            plain = await trio.open_tcp_stream("127.0.0.1", port)
            async with plain:

                async def send() -> None:
                    await plain.send_all(DATA)
                    await plain.send_eof()

                nursery.start_soon(send)
                assert await receive_exactly(plain, len(DATA)) == DATA
    await listener.aclose()
    assert seen == {"version": f"TLSv{version}", "got": DATA, "detached": "tcp"}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_through_stunnel_server_then_detach(
    version: str, certs: Certs, tools: Tools, tmp_path: Path
) -> None:
    backend, backend_port = await tcp_listener()
    service = (
        f"connect = 127.0.0.1:{backend_port}\ncert = {certs.cert_path}\nkey = {certs.key_path}\n"
    )
    port = await start_stunnel(tools, tmp_path, version, service)

    async def echo() -> None:
        async with await backend.accept() as stream:
            while chunk := await stream.receive_some():
                await stream.send_all(chunk)

    with trio.fail_after(TOOL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            raw = await ta.open_tcp("127.0.0.1", port)
            tls = await ta.TLSClientLayer(certs.ca, server_hostname="localhost").attach(raw)
            assert tls.tls_version == f"TLSv{version}"
            nursery.start_soon(tls.send_all, DATA)
            assert await receive_exactly(tls, len(DATA)) == DATA
            tcp = await tls.detach(ta.after(TOOL_TIMEOUT))  # stunnel answers close_notify
            assert bytes(tcp._pushback) == b""
            await tcp.aclose()
    await backend.aclose()
