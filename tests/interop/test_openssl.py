"""Interop with the openssl command line: our server under s_client, our client against s_server.

TLS 1.2 and 1.3 each; ALPN and SNI are checked on both ends (our side through the TLSStream's
attributes, openssl's side through what it prints). Skipped only when ``openssl`` is missing.
"""

from __future__ import annotations

import subprocess

import pytest
import trio

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, VERSION_FLAGS, Certs, Tools, echo_one_line, need, tcp_listener

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_s_client_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    openssl = need("openssl")
    listener, port = await tcp_listener()
    seen: dict[str, object] = {}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_one_line, listener, certs, seen)
        tool = await tools.start(
            [
                openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                "-CAfile", str(certs.ca_path), "-verify_return_error", VERSION_FLAGS[version],
                "-alpn", "http/1.1", "-ign_eof",
            ],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert tool.process.stdin is not None
        await tool.process.stdin.send_all(b"hello openssl\n")
        assert await tool.expect(rb"echo:hello openssl\n"), tool.text()
        assert await tool.wait() == 0, tool.text()
    await listener.aclose()
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
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", port)
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["http/1.1"])
        tls = await layer.attach(raw, ta.after(TOOL_TIMEOUT))
        async with tls:
            assert tls.tls_version == f"TLSv{version}"
            assert tls.server_hostname == "localhost"
            assert tls.alpn == ("http/1.1" if check == "alpn" else None)
            assert tls.peer_cert is not None
            await tls.send_all(b"abc\n")  # -rev answers each line reversed
            got = b""
            while b"cba" not in got:
                got += await tls.receive_some(100)
    if check == "alpn":
        pattern = rb"ALPN protocols advertised by the client: http/1\.1"
        assert await tool.expect(pattern), tool.text()
    else:
        assert await tool.expect(rb'Hostname in TLS extension: "localhost"'), tool.text()
        assert await tool.expect(rb"Switching server context"), tool.text()
