"""Interop with the openssl command line: our server under s_client, our client against s_server.

TLS 1.2 and 1.3 each; ALPN and SNI are checked on both ends (our side through the TLSStream's
attributes, openssl's side through what it prints), and a HelloRetryRequest each way (a key share
the server does not take). Skipped only when ``openssl`` is missing.
"""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import pytest
import trio

import trio_tlsattach as ta

from .conftest import (
    TOOL_TIMEOUT,
    VERSION_FLAGS,
    Certs,
    Tools,
    need,
    our_client_to_tool_server,
    s_client,
    tcp_listener,
    tool_client_to_our_server,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_s_client_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    need("openssl")

    def argv(port: int) -> list[str]:
        return s_client(port, certs, VERSION_FLAGS[version], "-alpn", "http/1.1", "-ign_eof")

    seen, tool, code = await tool_client_to_our_server(tools, certs, argv, b"hello openssl\n")
    assert code == 0, tool.text()
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1",
        "sni": "localhost",
        "got": b"hello openssl\n",
    }
    output = tool.text()
    assert "ALPN protocol: http/1.1" in output
    assert "Verify return code: 0 (ok)" in output
    assert f"TLSv{version}" in output


@pytest.mark.parametrize("check", ["alpn", "sni"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_to_s_server(version: str, check: str, certs: Certs, tools: Tools) -> None:
    """ALPN and SNI are checked on separate connections: s_server prints the SNI name only
    when it has a second certificate to switch to, and once switched it no longer selects
    ALPN (its ALPN callback lives on the first context only)."""
    openssl = need("openssl")
    argv = [
        openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev",
        "-cert", str(certs.cert_path), "-key", str(certs.key_path),
        VERSION_FLAGS[version], "-alpn", "h2,http/1.1",
    ]  # fmt: skip
    if check == "sni":
        argv += ["-servername", "localhost", "-servername_fatal"]
        argv += ["-cert2", str(certs.cert_path), "-key2", str(certs.key_path)]
    tool = await tools.start(argv)
    ready = await tool.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, tool.text()
    port = int(ready.group(1))
    seen = await our_client_to_tool_server(port, certs, b"abc\n", b"cba")  # -rev: reversed
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1" if check == "alpn" else None,
        "sni": "localhost",
        "peer_cert": True,
    }
    if check == "alpn":
        pattern = rb"ALPN protocols advertised by the client: http/1\.1"
        assert await tool.expect(pattern), tool.text()
    else:
        assert await tool.expect(rb'Hostname in TLS extension: "localhost"'), tool.text()
        assert await tool.expect(rb"Switching server context"), tool.text()


async def test_hello_retry_request_from_our_server(certs: Certs, tools: Tools) -> None:
    """Our server takes only P-384; s_client's first key share is X25519, so the server asks
    again (HelloRetryRequest) and the handshake takes a second ClientHello."""
    need("openssl")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.leaf.configure_cert(context)
    context.set_ecdh_curve("secp384r1")  # on OpenSSL 3 this is the whole group list
    listener, port = await tcp_listener()
    seen: dict[str, object] = {}

    async def serve() -> None:
        raw = await listener.accept()
        async with await ta.TLSServerLayer(context).attach(raw, ta.after(TOOL_TIMEOUT)) as tls:
            got = seen["got"] = await tls.receive_some()
            await tls.send_all(b"echo:" + got)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        tool = await tools.start(
            s_client(port, certs, "-tls1_3", "-msg", "-ign_eof"), stdin=subprocess.PIPE
        )
        assert tool.process.stdin is not None
        await tool.process.stdin.send_all(b"retry\n")
        assert await tool.expect(rb"echo:retry"), tool.text()
        await tool.wait()
    await listener.aclose()
    assert seen == {"got": b"retry\n"}
    assert (
        len(re.findall(rb">>> TLS 1\.3, Handshake \[length \w+\], ClientHello", tool.output)) == 2
    )
    assert b"Server Temp Key: ECDH, secp384r1" in tool.output


async def test_hello_retry_request_to_our_client(certs: Certs, tools: Tools) -> None:
    openssl = need("openssl")
    tool = await tools.start(
        [
            openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev", "-msg",
            "-cert", str(certs.cert_path), "-key", str(certs.key_path), "-tls1_3",
            "-groups", "P-384",
        ]
    )  # fmt: skip
    ready = await tool.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, tool.text()
    seen = await our_client_to_tool_server(int(ready.group(1)), certs, b"retry\n", b"yrter")
    assert seen["version"] == "TLSv1.3"
    assert await tool.wait() == 0, tool.text()
    assert (
        len(re.findall(rb"<<< TLS 1\.3, Handshake \[length \w+\], ClientHello", tool.output)) == 2
    )


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_client_certificates_with_openssl(
    version: str, certs: Certs, tools: Tools, tmp_path: Path
) -> None:
    """Mutual TLS both ways: s_client presents a certificate to our server, which requires
    one; our client presents one to ``s_server -Verify``."""
    openssl = need("openssl")
    identity = certs.ca.issue_cert("client@example.org")
    client_pem = tmp_path / "client.pem"
    identity.private_key_and_cert_chain_pem.write_to_path(str(client_pem))

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.leaf.configure_cert(server_ctx)
    certs.ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener, port = await tcp_listener()
    seen: list[object] = []

    async def serve() -> None:
        raw = await listener.accept()
        async with await ta.TLSServerLayer(server_ctx).attach(raw, ta.after(TOOL_TIMEOUT)) as tls:
            peer = tls.peer_cert
            seen.append(peer["subjectAltName"] if peer else None)
            await tls.send_all(b"echo:" + await tls.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        tool = await tools.start(
            s_client(port, certs, "-cert", str(client_pem), VERSION_FLAGS[version], "-ign_eof"),
            stdin=subprocess.PIPE,
        )
        assert tool.process.stdin is not None
        await tool.process.stdin.send_all(b"mutual\n")
        assert await tool.expect(rb"echo:mutual"), tool.text()
        await tool.wait()
    await listener.aclose()
    assert seen == [(("email", "client@example.org"),)]

    server = await tools.start(
        [
            openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev",
            "-cert", str(certs.cert_path), "-key", str(certs.key_path), VERSION_FLAGS[version],
            "-Verify", "1", "-verify_return_error", "-CAfile", str(certs.ca_path),
        ]
    )  # fmt: skip
    ready = await server.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, server.text()
    client_ctx = ssl.create_default_context()
    certs.ca.configure_trust(client_ctx)
    identity.configure_cert(client_ctx)
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", int(ready.group(1)))
        layer = ta.TLSClientLayer(client_ctx, server_hostname="localhost")
        async with await layer.attach(raw) as tls:
            await tls.send_all(b"mutual\n")
            got = b""
            while b"lautum" not in got:
                chunk = await tls.receive_some()
                assert chunk, got
                got += chunk
    assert await server.expect(rb"Peer certificate: .*Testing cert"), server.text()
    assert await server.expect(rb"Verification: OK"), server.text()
