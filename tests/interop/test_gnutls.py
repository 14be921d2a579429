"""Interop with GnuTLS: our server under gnutls-cli, our client against gnutls-serv.

A second, independent TLS implementation (not OpenSSL). TLS 1.2 and 1.3 each; ALPN and SNI
are checked on both ends (GnuTLS reports them in its output). Skipped only when the tool is
missing.
"""

from __future__ import annotations

import subprocess

import pytest
import trio

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, Certs, Tools, echo_one_line, need, tcp_listener

pytestmark = pytest.mark.interop


def priority(version: str) -> str:
    return f"--priority=NORMAL:-VERS-ALL:+VERS-TLS{version}"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_gnutls_cli_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    gnutls_cli = need("gnutls-cli")
    listener, port = await tcp_listener()
    seen: dict[str, object] = {}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_one_line, listener, certs, seen)
        tool = await tools.start(
            [
                gnutls_cli, "--x509cafile", str(certs.ca_path), priority(version),
                "--alpn=http/1.1", "--sni-hostname=localhost", "-p", str(port), "localhost",
            ],
            stdin=subprocess.PIPE,
        )  # fmt: skip
        assert tool.process.stdin is not None
        await tool.process.stdin.send_all(b"hello gnutls\n")
        assert await tool.expect(rb"echo:hello gnutls"), tool.text()
        await tool.process.stdin.aclose()  # EOF on stdin: gnutls-cli says goodbye and exits
        await tool.wait()
    await listener.aclose()
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
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", port)
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["http/1.1"])
        tls = await layer.attach(raw, ta.after(TOOL_TIMEOUT))
        async with tls:
            assert tls.tls_version == f"TLSv{version}"
            assert tls.alpn == "http/1.1"
            await tls.send_all(b"ping gnutls\n")
            got = b""
            while b"ping gnutls" not in got:
                got += await tls.receive_some(100)
    assert await tool.expect(rb"Given server name\[1\]: localhost"), tool.text()
    assert await tool.expect(rb"Application protocol: http/1\.1"), tool.text()
    assert await tool.expect(f"Version: TLS{version}".encode()), tool.text()
