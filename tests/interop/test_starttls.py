"""STARTTLS with real clients: ``openssl s_client -starttls smtp`` and ``gnutls-cli
--starttls-proto=smtp`` against an SMTP-like server built as a stack.

The server speaks CRLF lines in plaintext, pops the line layer at ``STARTTLS`` (whatever the
client sent right behind its command goes back to the stream below, ready for TLS), pushes TLS
and a new line layer, and answers one command over TLS (``NOOP``: s_client takes a line that
starts with ``Q`` as its own quit command). Each client does the plaintext part its own way
(openssl through a buffered BIO, GnuTLS with bare ``recv`` calls), so they check that the pop
hands over exactly the bytes that belong below.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

import trio_tlsattach as ta

from .conftest import (
    TOOL_TIMEOUT,
    VERSION_FLAGS,
    Certs,
    Tools,
    need,
    s_client,
    tool_client_to_our_server,
)

pytestmark = pytest.mark.interop


async def smtp_like_server(
    listener: trio.SocketListener, certs: Certs, seen: dict[str, object]
) -> None:
    """One client: greeting, EHLO, STARTTLS, then ``NOOP`` over TLS. Records what it saw."""
    deadline = ta.after(TOOL_TIMEOUT)
    async with ta.ProtocolStack(await listener.accept()) as stack:
        lines = await stack.push(ta.CRLFLayer())
        await lines.send_message(b"220 localhost ESMTP trio_tlsattach", deadline)
        seen["ehlo"] = await lines.receive_message(deadline)
        await lines.send_message(b"250-localhost", deadline)
        await lines.send_message(b"250-8BITMIME", deadline)
        await lines.send_message(b"250 STARTTLS", deadline)
        seen["command"] = await lines.receive_message(deadline)
        await lines.send_message(b"220 2.0.0 Ready to start TLS", deadline)
        await stack.pop()
        tls = await stack.push(ta.TLSServerLayer(certs.leaf), deadline)
        seen["version"] = tls.tls_version
        secure = await stack.push(ta.CRLFLayer())
        seen["noop"] = await secure.receive_message(deadline)
        await secure.send_message(b"250 2.0.0 OK over " + str(tls.tls_version).encode(), deadline)
        await stack.pop()
        # The client ends the session: gnutls-cli leaves without answering a close_notify, so
        # waiting for its answer to ours would fail (as it should: no close_notify, no detach).
        seen["eof"] = await tls.receive_some(deadline=deadline)
        await stack.pop(deadline)
        seen["stack"] = repr(stack)


async def run_client(
    tools: Tools, certs: Certs, argv: Callable[[int], list[str]]
) -> dict[str, object]:
    """The tool as a client of :func:`smtp_like_server`; what the server saw."""
    seen, _, _ = await tool_client_to_our_server(
        tools, certs, argv, b"NOOP\n", smtp_like_server, rb"250 2\.0\.0 OK over TLSv1\.\d"
    )
    return seen


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_openssl_s_client_starttls_smtp(version: str, certs: Certs, tools: Tools) -> None:
    need("openssl")

    def argv(port: int) -> list[str]:
        return s_client(
            port, certs, "-starttls", "smtp", "-name", "client.example", "-crlf",
            VERSION_FLAGS[version],
        )  # fmt: skip

    seen = await run_client(tools, certs, argv)
    assert seen == {
        "ehlo": b"EHLO client.example",
        "command": b"STARTTLS",
        "version": f"TLSv{version}",
        "noop": b"NOOP",
        "eof": b"",
        "stack": "<ProtocolStack tcp>",
    }


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_gnutls_cli_starttls_smtp(version: str, certs: Certs, tools: Tools) -> None:
    gnutls_cli = need("gnutls-cli")

    def argv(port: int) -> list[str]:
        return [
            gnutls_cli, "--starttls-proto=smtp", "--crlf", "--x509cafile", str(certs.ca_path),
            f"--priority=NORMAL:-VERS-ALL:+VERS-TLS{version}", "-p", str(port), "localhost",
        ]  # fmt: skip

    seen = await run_client(tools, certs, argv)
    assert seen["command"] == b"STARTTLS"
    ehlo = seen["ehlo"]
    assert isinstance(ehlo, bytes)
    assert ehlo.startswith(b"EHLO "), ehlo
    assert seen["version"] == f"TLSv{version}"
    assert seen["noop"] == b"NOOP"
    assert seen["eof"] == b""
    assert seen["stack"] == "<ProtocolStack tcp>"
