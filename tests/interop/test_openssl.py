"""Interop with the openssl command line: our server under s_client, our client against s_server.

TLS 1.2 and 1.3 each; ALPN and SNI are checked on both ends (our side through the TLSStream's
attributes, openssl's side through what it prints). Skipped only when ``openssl`` is missing.
"""

from __future__ import annotations

import pytest

from .conftest import (
    VERSION_FLAGS,
    Certs,
    Tools,
    need,
    our_client_to_tool_server,
    tool_client_to_our_server,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_s_client_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    openssl = need("openssl")

    def argv(port: int) -> list[str]:
        return [
            openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-CAfile", str(certs.ca_path), "-verify_return_error", VERSION_FLAGS[version],
            "-alpn", "http/1.1", "-ign_eof",
        ]  # fmt: skip

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
