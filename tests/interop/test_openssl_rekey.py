"""Interop in the middle of a connection: TLS 1.3 key updates and TLS 1.2 renegotiation.

``openssl s_client`` and ``s_server`` read commands typed at the start of a line (``k``/``K``: a
KeyUpdate, ``K`` asking the peer for one back; ``R``/``r``: renegotiate) and, with ``-msg``,
print every handshake message with its direction (``>>>`` sent, ``<<<`` received). Data must
flow both ways after each, and a ``K`` must be answered with our own KeyUpdate, which OpenSSL
queues while decrypting: the receive path has to send it even though nobody is sending.
Client-initiated renegotiation is refused by our server (OpenSSL 3's default), which must end
as a clear :class:`TLSError`, not a hang.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import trio
from _tls_helpers import receive_line

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, VERSION_FLAGS, Certs, Tool, Tools, need, s_client, tcp_listener

pytestmark = pytest.mark.interop


async def echo_lines(listener: trio.SocketListener, certs: Certs, log: list[object]) -> None:
    """Our TLS server for one client: echo what arrives until the client closes.

    Logs each piece received, then ``b""`` at the client's close, or the error that ended it.
    The listener is closed once the client is in.
    """
    async with listener:
        raw = await listener.accept()
    tls = await ta.TLSServerLayer(certs.leaf).attach(raw, ta.after(TOOL_TIMEOUT))
    async with tls:
        try:
            while data := await tls.receive_some():
                log.append(data)
                await tls.send_all(b"echo:" + data)
            log.append(b"")
        except ta.TLSError as exc:
            log.append(exc)


async def type_line(tool: Tool, line: bytes) -> None:
    assert tool.process.stdin is not None
    await tool.process.stdin.send_all(line + b"\n")


async def s_client_to_echo(
    nursery: trio.Nursery, tools: Tools, certs: Certs, log: list[object], version_flag: str
) -> Tool:
    """Our :func:`echo_lines` server, and ``s_client -msg`` as its client once a first line
    went there and back."""
    listener, port = await tcp_listener()
    nursery.start_soon(echo_lines, listener, certs, log)
    tool = await tools.start(s_client(port, certs, version_flag, "-msg"), stdin=subprocess.PIPE)
    await type_line(tool, b"before")
    assert await tool.expect(rb"echo:before"), tool.text()
    return tool


@pytest.mark.parametrize("command", ["k", "K"])
async def test_key_update_from_s_client(command: str, certs: Certs, tools: Tools) -> None:
    need("openssl")
    log: list[object] = []
    with trio.fail_after(TOOL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            tool = await s_client_to_echo(nursery, tools, certs, log, "-tls1_3")
            await type_line(tool, command.encode())
            assert await tool.expect(rb">>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate")
            await type_line(tool, b"after")
            assert await tool.expect(rb"echo:after"), tool.text()
            assert tool.process.stdin is not None
            await tool.process.stdin.aclose()  # s_client then sends close_notify and exits
            await tool.wait()
    assert log == [b"before\n", b"after\n", b""]
    answered = re.search(rb"<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate", tool.output)
    assert (answered is not None) == (command == "K"), tool.text()


async def test_client_renegotiation_is_refused(certs: Certs, tools: Tools) -> None:
    need("openssl")
    log: list[object] = []
    with trio.fail_after(TOOL_TIMEOUT):
        async with trio.open_nursery() as nursery:
            tool = await s_client_to_echo(nursery, tools, certs, log, "-tls1_2")
            await type_line(tool, b"R")
            assert await tool.expect(rb"<<< TLS 1\.2, Alert .*no_renegotiation"), tool.text()
            await tool.wait()  # s_client gives up on the connection
    assert log[0] == b"before\n"
    assert len(log) == 2
    error = log[1]
    assert isinstance(error, ta.TLSError)
    assert error.errno == ta.TLSError.default_errno  # EPROTO: the client's fatal alert


@pytest.mark.parametrize(
    ("version", "command", "sent", "answer"),
    [
        ("1.3", "K", b"KeyUpdate", rb"<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate"),
        ("1.2", "r", b"HelloRequest", rb"<<< TLS 1\.2, Handshake \[length 0010\], Finished"),
    ],
    ids=["key update", "renegotiation"],
)
async def test_s_server_rekeys_our_client(
    version: str, command: str, sent: bytes, answer: bytes, certs: Certs, tools: Tools
) -> None:
    openssl = need("openssl")
    tool = await tools.start(
        [
            openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-msg",
            "-cert", str(certs.cert_path), "-key", str(certs.key_path), VERSION_FLAGS[version],
        ],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    ready = await tool.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, tool.text()
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", int(ready.group(1)))
        tls = await ta.TLSClientLayer(certs.ca, server_hostname="localhost").attach(raw)
        async with tls:
            for round_ in (b"1", b"2"):
                # The server speaks first, so our client reads the command's records before
                # it writes: a KeyUpdate is answered before our next application data.
                await type_line(tool, b"to our client " + round_)
                got = await receive_line(tls)  # also runs the handshake messages
                assert got == b"to our client " + round_ + b"\n"
                await tls.send_all(b"from our client " + round_ + b"\n")
                assert await tool.expect(rb"from our client " + round_), tool.text()
                if round_ == b"1":
                    await type_line(tool, command.encode())
                    # A command is read only alone on its line: let s_server act on it first.
                    assert await tool.expect(b">>> .*" + sent), tool.text()
            assert await tool.expect(b"(?s)" + sent + b".*" + answer), tool.text()  # our part


async def test_s_server_renegotiates_while_our_client_sends_and_receives(
    certs: Certs, tools: Tools
) -> None:
    """A send that meets the renegotiation while another task is receiving waits for that
    task's reads instead of competing with it for the socket."""
    openssl = need("openssl")
    tool = await tools.start(
        [
            openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-msg",
            "-cert", str(certs.cert_path), "-key", str(certs.key_path), "-tls1_2",
        ],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    ready = await tool.expect(rb"ACCEPT 127\.0\.0\.1:(\d+)")
    assert ready is not None, tool.text()
    lines_in, lines_out = trio.open_memory_channel[bytes](10)
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", int(ready.group(1)))
        tls = await ta.TLSClientLayer(certs.ca, server_hostname="localhost").attach(raw)

        async def read_lines() -> None:
            got = b""
            while chunk := await tls.receive_some():
                got += chunk
                while b"\n" in got:
                    line, got = got.split(b"\n", 1)
                    await lines_in.send(line)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_lines)
            await type_line(tool, b"to our client 1")
            assert await lines_out.receive() == b"to our client 1"
            await type_line(tool, b"r")
            assert await tool.expect(b">>> .*HelloRequest"), tool.text()
            await tls.send_all(b"from our client 1\n")  # meets the handshake in OpenSSL
            assert await tool.expect(rb"from our client 1"), tool.text()
            await type_line(tool, b"to our client 2")
            assert await lines_out.receive() == b"to our client 2"
            nursery.cancel_scope.cancel()
        await tls.aclose()
    pattern = b"(?s)HelloRequest.*<<< TLS 1\\.2, Handshake \\[length 0010\\], Finished"
    assert await tool.expect(pattern), tool.text()
