"""Interop with GnuTLS: our server under gnutls-cli, our client against gnutls-serv.

A second, independent TLS implementation (not OpenSSL). TLS 1.2 and 1.3 each; ALPN and SNI
are checked on both ends (GnuTLS reports them in its output). Skipped only when the tool is
missing.
"""

from __future__ import annotations

import pytest

from .conftest import Certs, Tools, need, our_client_to_tool_server, tool_client_to_our_server

pytestmark = pytest.mark.interop


def priority(version: str) -> str:
    return f"--priority=NORMAL:-VERS-ALL:+VERS-TLS{version}"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_gnutls_cli_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    gnutls_cli = need("gnutls-cli")

    def argv(port: int) -> list[str]:
        return [
            gnutls_cli, "--x509cafile", str(certs.ca_path), priority(version),
            "--alpn=http/1.1", "--sni-hostname=localhost", "-p", str(port), "localhost",
        ]  # fmt: skip

    seen, tool, _ = await tool_client_to_our_server(tools, certs, argv, b"hello gnutls\n")
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1",
        "sni": "localhost",
        "got": b"hello gnutls\n",
    }
    output = tool.text()
    assert "- Application protocol: http/1.1" in output
    assert f"(TLS{version}-" in output
    assert "The certificate is trusted" in output


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_to_gnutls_serv(version: str, certs: Certs, tools: Tools) -> None:
    gnutls_serv = need("gnutls-serv")

    def argv(port: int) -> list[str]:
        # gnutls-serv cannot be told an address; we connect to it over loopback only.
        return [
            gnutls_serv, "--echo", "-p", str(port), "--x509certfile", str(certs.cert_path),
            "--x509keyfile", str(certs.key_path), priority(version), "--alpn=h2",
            "--alpn=http/1.1", "--sni-hostname=localhost", "--sni-hostname-fatal",
            "--disable-client-cert",
        ]  # fmt: skip

    tool, port = await tools.start_listening(argv, rb"listening on IPv4 .* port \d+\.\.\.done")
    seen = await our_client_to_tool_server(port, certs, b"ping gnutls\n", b"ping gnutls")
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1",
        "sni": "localhost",
        "peer_cert": True,
    }
    assert await tool.expect(rb"Given server name\[1\]: localhost"), tool.text()
    assert await tool.expect(rb"Application protocol: http/1\.1"), tool.text()
    assert await tool.expect(f"Version: TLS{version}".encode()), tool.text()
