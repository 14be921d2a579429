"""Interop with Java's TLS (JSSE): a third implementation, sharing no code with OpenSSL or GnuTLS.

The peer is ``TlsPeer.java``, run by the JDK's source launcher. Besides the handshake and echo
both ways (TLS 1.2 and 1.3), JSSE does things the other tools here cannot be told to do:

* it sends a KeyUpdate (with ``update_requested``) every time its key has protected the number
  of bytes in the ``jdk.tls.keyLimits`` security property: set low, a bulk transfer carries a
  KeyUpdate every 64 KiB, each of which our side must answer with its own, whether it is only
  receiving (a server) or sending and receiving at once (a client);
* its ``shutdownOutput`` is a TLS 1.3 half-close (close_notify, then it still reads);
* a TLS socket layered over a plain one with ``autoClose`` false leaves that socket open after
  the close_notify exchange, so the plaintext after TLS is a real STARTTLS-style hand-back
  (our ``detach``).

JSSE sends no SNI for a name without a dot ("localhost"), which the tests expect. Skipped when
no JDK is installed (the source launcher needs one, not only a JRE).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from _tls_helpers import receive_exactly, receive_line
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

import trio_tlsattach as ta

from .conftest import (
    TOOL_TIMEOUT,
    Certs,
    Tool,
    Tools,
    need,
    our_client_to_tool_server,
    tool_client_to_our_server,
)

pytestmark = pytest.mark.interop

TLS_PEER = Path(__file__).with_name("TlsPeer.java")
BULK = 1 << 20
KEY_LIMIT = 1 << 16
"""Bytes JSSE protects with one key before it sends a KeyUpdate (the default is 2^37)."""
P12_PASSWORD = "interop"


def java(*args: str, key_limits: Path | None = None, debug: bool = False) -> list[str]:
    """The command line running ``TlsPeer.java`` with ``args``; ``key_limits`` is a security
    properties file (see :func:`key_limits`), ``debug`` logs JSSE's handshake messages."""
    need("javac")  # the source launcher compiles: a JRE alone cannot run it
    options = [f"-Djava.security.properties={key_limits}"] if key_limits else []
    if debug:
        options.append("-Djavax.net.debug=ssl:handshake")
    return [need("java"), *options, str(TLS_PEER), *args]


@pytest.fixture
def key_limits(tmp_path: Path) -> Path:
    """A security properties file that makes JSSE send a KeyUpdate every ``KEY_LIMIT`` bytes."""
    path = tmp_path / "key-limits.properties"
    path.write_text(
        f"jdk.tls.keyLimits=AES/GCM/NoPadding KeyUpdate 2^{KEY_LIMIT.bit_length() - 1}\n"
    )
    return path


@pytest.fixture
def p12(certs: Certs, tmp_path: Path) -> Path:
    """The leaf certificate and key as a PKCS#12 file, the key store Java reads."""
    key = serialization.load_pem_private_key(certs.leaf.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)  # what trustme makes
    cert = x509.load_pem_x509_certificate(certs.leaf.cert_chain_pems[0].bytes())
    encryption = serialization.BestAvailableEncryption(P12_PASSWORD.encode())
    path = tmp_path / "leaf.p12"
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"leaf", key, cert, None, encryption))
    return path


def client_argv(
    certs: Certs, version: str, *mode: str, key_limits: Path | None = None, debug: bool = False
) -> Callable[[int], list[str]]:
    """``make_argv`` for :func:`tool_client_to_our_server`: TlsPeer.java as a client."""

    def make(port: int) -> list[str]:
        args = ("client", str(port), str(certs.ca_path), f"TLSv{version}", *mode)
        return java(*args, key_limits=key_limits, debug=debug)

    return make


async def java_server(
    tools: Tools,
    p12: Path,
    version: str,
    clients: int = 1,
    key_limits: Path | None = None,
    debug: bool = False,
) -> tuple[Tool, int]:
    """TlsPeer.java as an echo server for ``clients`` clients in turn, on a port of its
    choosing; the tool and the port."""
    args = ("server", str(p12), P12_PASSWORD, f"TLSv{version}", str(clients))
    tool = await tools.start(java(*args, key_limits=key_limits, debug=debug))
    match = await tool.expect(rb"LISTENING (\d+)\n")
    assert match is not None, tool.text()
    return tool, int(match.group(1))


def pattern(start: int, count: int) -> bytes:
    """The bytes TlsPeer.java's bulk mode sends from offset ``start``: ``i % 251``."""
    return bytes((start + i) % 251 for i in range(count))


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_java_client_to_our_server(version: str, certs: Certs, tools: Tools) -> None:
    seen, tool, code = await tool_client_to_our_server(
        tools, certs, client_argv(certs, version, "echo"), b"hello java\n",
        answer=rb"GOT echo:hello java\\n\nDONE",
    )  # fmt: skip
    assert code == 0, tool.text()
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1",  # the one JSSE offers, of our h2 and http/1.1
        "sni": None,
        "got": b"hello java\n",
    }
    assert f"PROTOCOL TLSv{version}\nALPN http/1.1\n" in tool.text()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_to_java_server(
    version: str, certs: Certs, tools: Tools, p12: Path
) -> None:
    tool, port = await java_server(tools, p12, version)
    seen = await our_client_to_tool_server(port, certs, b"ping java\n", b"echo:ping java\n")
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": None,  # offered; the Java server is not configured for ALPN
        "sni": "localhost",
        "peer_cert": True,
    }
    assert await tool.wait() == 0, tool.text()
    assert f"PROTOCOL TLSv{version}" in tool.text()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_resumes_sessions_with_a_java_server(
    version: str, certs: Certs, tools: Tools, p12: Path
) -> None:
    """The client layer's session cache (on by default) with JSSE's sessions: TLS 1.2 session
    IDs, TLS 1.3 tickets (which arrive after the handshake, before the echo)."""
    tool, port = await java_server(tools, p12, version, clients=3)
    layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost")
    reused = []
    with trio.fail_after(TOOL_TIMEOUT):
        for _ in range(3):
            tls = await layer.attach(await ta.open_tcp("127.0.0.1", port))
            async with tls:
                await tls.send_all(b"again\n")
                assert await receive_exactly(tls, len(b"echo:again\n")) == b"echo:again\n"
                reused.append(tls.session_reused)
    assert reused == [False, True, True]
    assert await tool.wait() == 0, tool.text()


async def test_key_updates_and_half_close_from_a_java_client(
    certs: Certs, tools: Tools, key_limits: Path
) -> None:
    """1 MiB from JSSE with a KeyUpdate every 64 KiB, then its half-close: our server, only
    receiving, answers every KeyUpdate, sees the close_notify as the end, and still replies."""

    async def count_then_answer(
        listener: trio.SocketListener, certs: Certs, seen: dict[str, object]
    ) -> None:
        tls = await ta.TLSServerLayer(certs.leaf).attach(
            await listener.accept(), ta.after(TOOL_TIMEOUT)
        )
        async with tls:
            total, intact = 0, True
            buffer = bytearray(65536)
            while n := await tls.receive_into(buffer):
                intact &= buffer[:n] == pattern(total, n)
                total += n
            seen.update(total=total, intact=intact)
            await tls.send_all(f"got {total} intact={intact}\n".encode())

    argv = client_argv(certs, "1.3", "bulk", str(BULK), key_limits=key_limits, debug=True)
    seen, tool, code = await tool_client_to_our_server(
        tools, certs, argv, b"", serve=count_then_answer, answer=rb"DONE"
    )
    assert code == 0, tool.text()[-3000:]
    assert seen == {"total": BULK, "intact": True}
    output = tool.text()
    assert f"GOT got {BULK} intact=True" in output
    updates = BULK // KEY_LIMIT
    assert output.count("Produced KeyUpdate") >= updates - 1  # JSSE's own
    assert output.count("Consuming KeyUpdate") >= updates - 1  # our answers


async def test_full_duplex_with_key_updates_through_a_java_server(
    certs: Certs, tools: Tools, p12: Path, key_limits: Path
) -> None:
    """Our client sends 1 MiB while it receives JSSE's echo of it, and JSSE sends a KeyUpdate
    (update_requested) every 64 KiB it writes: our answers go out between our own records."""
    tool, port = await java_server(tools, p12, "1.3", key_limits=key_limits, debug=True)
    data = random.Random(7).randbytes(BULK)
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", port)
        tls = await ta.TLSClientLayer(certs.ca, server_hostname="localhost").attach(raw)
        async with tls:
            got = bytearray()

            async def receive() -> None:
                buffer = bytearray(65536)
                while len(got) < len(data) + len(b"echo:"):
                    n = await tls.receive_into(buffer)
                    assert n, f"the server closed after {len(got)} bytes"
                    got.extend(buffer[:n])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                for start in range(0, len(data), 50_000):
                    await tls.send_all(data[start : start + 50_000])
            assert got == b"echo:" + data
    assert await tool.wait() == 0
    output = tool.text()
    updates = BULK // KEY_LIMIT
    assert output.count("Produced KeyUpdate") >= updates - 1
    assert output.count("Consuming KeyUpdate") >= updates - 1


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_detach_hands_back_the_plaintext_after_java_closes_tls(
    version: str, certs: Certs, tools: Tools
) -> None:
    """JSSE layered over a plain socket: one line over TLS, then its close_notify (and it waits
    for ours), then plaintext on the same socket, which our ``detach`` must hand back whole."""

    async def tls_then_plain(
        listener: trio.SocketListener, certs: Certs, seen: dict[str, object]
    ) -> None:
        tls = await ta.TLSServerLayer(certs.leaf).attach(
            await listener.accept(), ta.after(TOOL_TIMEOUT)
        )
        line = seen["tls"] = await receive_line(tls)
        await tls.send_all(b"echo:" + line)
        below = await tls.detach(ta.after(TOOL_TIMEOUT))
        async with below:
            seen["plain"] = await receive_line(below)
            await below.send_all(b"plain ok\n")

    seen, tool, code = await tool_client_to_our_server(
        tools, certs, client_argv(certs, version, "detach"), b"", serve=tls_then_plain,
        answer=rb"DONE",
    )  # fmt: skip
    assert code == 0, tool.text()
    assert seen == {"tls": b"over tls\n", "plain": b"plain after tls\n"}
    assert re.search(rb"TLS echo:over tls\nPLAIN plain ok\n", tool.output), tool.text()
