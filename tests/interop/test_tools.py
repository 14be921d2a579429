"""Interop with other TLS implementations: openssl, GnuTLS, CPython's blocking ssl module.

Our server is driven by ``openssl s_client`` / ``gnutls-cli`` / ``ssl.SSLSocket``; our client
talks to ``openssl s_server`` / ``gnutls-serv``. Both TLS versions; ALPN and SNI are checked
where the tool reports them. Everything is loopback, and every tool runs under a time bound.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest
import trio

import trio_tlsattach as ta

from .conftest import Certs, free_port, need, wait_for_port

pytestmark = pytest.mark.interop

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


async def _serve_once(
    certs: Certs, alpn: list[str] | None = None
) -> tuple[trio.SocketListener, int, dict[str, object]]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    return listener, port, {"layer": ta.TLSServerLayer(certs.leaf, alpn=alpn)}


async def _echo_one(
    listener: trio.SocketListener, layer: ta.TLSServerLayer, seen: dict[str, object]
) -> None:
    raw = await listener.accept()
    tls = await layer.attach(raw, ta.after(20))
    seen.update(version=tls.tls_version, alpn=tls.alpn, sni=tls.server_hostname)
    async with tls:
        data = await tls.receive_some()
        await tls.send_all(b"echo:" + data)
        seen["got"] = data


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_openssl_s_client_to_our_server(version: str, certs: Certs) -> None:
    openssl = need("openssl")
    listener, port, extra = await _serve_once(certs, alpn=["h2", "http/1.1"])
    seen: dict[str, object] = {}
    command = [
        openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
        "-CAfile", str(certs.ca_path), "-verify_return_error", f"-tls{version.replace('.', '_')}",
        "-alpn", "http/1.1", "-quiet",
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_echo_one, listener, extra["layer"], seen)
        with trio.fail_after(20):
            result = await trio.run_process(
                command, stdin=b"hello openssl\n", capture_stdout=True, capture_stderr=True
            )
    await listener.aclose()
    assert b"echo:hello openssl" in result.stdout
    assert seen == {
        "version": f"TLSv{version}",
        "alpn": "http/1.1",
        "sni": "localhost",
        "got": b"hello openssl\n",
    }


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_gnutls_cli_to_our_server(version: str, certs: Certs) -> None:
    gnutls = need("gnutls-cli")
    listener, port, extra = await _serve_once(certs, alpn=["h2"])
    seen: dict[str, object] = {}
    priority = f"NORMAL:-VERS-ALL:+VERS-TLS{version}"
    command = [
        gnutls, "--x509cafile", str(certs.ca_path), f"--priority={priority}", "--alpn=h2",
        "--sni-hostname=localhost", "-p", str(port), "localhost",
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_echo_one, listener, extra["layer"], seen)
        with trio.fail_after(20):
            result = await trio.run_process(
                command, stdin=b"hello gnutls\n", capture_stdout=True, capture_stderr=True,
                check=False,
            )  # fmt: skip
    await listener.aclose()
    assert b"echo:hello gnutls" in result.stdout
    assert seen["version"] == f"TLSv{version}"
    assert seen["alpn"] == "h2"
    assert seen["sni"] == "localhost"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_cpython_sslsocket_with_unwrap_then_plaintext(version: str, certs: Certs) -> None:
    """A blocking ssl.SSLSocket client: TLS, unwrap() both ways, then plaintext on the socket."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    context = ssl.create_default_context(cafile=str(certs.ca_path))
    context.maximum_version = context.minimum_version = VERSIONS[version]
    context.set_alpn_protocols(["x-test"])
    outcome: dict[str, object] = {}

    def client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            tls = context.wrap_socket(sock, server_hostname="localhost")
            outcome["alpn"] = tls.selected_alpn_protocol()
            tls.sendall(b"over tls")
            outcome["reply"] = tls.recv(100)
            plain = tls.unwrap()
            plain.sendall(b"plaintext now")
            outcome["plain_reply"] = plain.recv(100)
            plain.close()

    async def server() -> None:
        raw = await listener.accept()
        tls = await ta.TLSServerLayer(certs.leaf, alpn=["x-test"]).attach(raw, ta.after(20))
        assert await tls.receive_some(100) == b"over tls"
        await tls.send_all(b"tls reply")
        tcp = await tls.detach(ta.after(20))
        got = b""
        while got != b"plaintext now":
            got += await tcp.receive_some(100)
        await tcp.send_all(b"plain reply")
        await tcp.aclose()

    thread = threading.Thread(target=client)
    thread.start()
    with trio.fail_after(20):
        await server()
        await trio.to_thread.run_sync(thread.join)
    await listener.aclose()
    assert outcome == {"alpn": "x-test", "reply": b"tls reply", "plain_reply": b"plain reply"}


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_to_openssl_s_server(
    version: str, certs: Certs, processes: list[subprocess.Popen[bytes]]
) -> None:
    openssl = need("openssl")
    port = free_port()
    processes.append(
        subprocess.Popen(
            [
                openssl,
                "s_server",
                "-accept",
                f"127.0.0.1:{port}",
                "-cert",
                str(certs.cert_path),
                "-key",
                str(certs.key_path),
                f"-tls{version.replace('.', '_')}",
                "-alpn",
                "h2,http/1.1",
                "-rev",
                "-naccept",
                "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    )
    with trio.fail_after(20):
        raw = await wait_for_port(port)
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["http/1.1"])
        tls = await layer.attach(raw, ta.after(20))
        assert tls.tls_version == f"TLSv{version}"
        assert tls.alpn == "http/1.1"
        await tls.send_all(b"abc\n")  # -rev answers each line reversed
        got = b""
        while b"cba" not in got:
            got += await tls.receive_some(100)
        await tls.aclose()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_our_client_to_gnutls_serv(
    version: str, certs: Certs, processes: list[subprocess.Popen[bytes]]
) -> None:
    gnutls = need("gnutls-serv")
    port = free_port()
    processes.append(
        subprocess.Popen(
            [
                gnutls,
                "--echo",
                "-p",
                str(port),
                "--x509certfile",
                str(certs.cert_path),
                "--x509keyfile",
                str(certs.key_path),
                f"--priority=NORMAL:-VERS-ALL:+VERS-TLS{version}",
                "--alpn=h2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    with trio.fail_after(20):
        raw = await wait_for_port(port)
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["h2"])
        tls = await layer.attach(raw, ta.after(20))
        assert tls.tls_version == f"TLSv{version}"
        assert tls.alpn == "h2"
        await tls.send_all(b"ping gnutls\n")
        got = b""
        while b"ping gnutls" not in got:
            got += await tls.receive_some(100)
        await tls.aclose()
