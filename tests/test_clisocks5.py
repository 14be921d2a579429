"""``tlsattach socks5`` end to end: the proxy as a subprocess, curl (a client no one here wrote)
and our own SOCKS5 client through it, with and without username/password, behind TLS, its log
lines, its limits and its clean shutdown; bad arguments refused before it starts.

Every proxy listens on port 0 and the test reads the bound port from the line it prints; every
subprocess is killed at the end, whatever happens.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from _cli_helpers import TIMEOUT, read_line

import trio_tlsattach as ta

CLI = [sys.executable, "-m", "trio_tlsattach", "socks5"]
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class Proxy:
    """A running ``tlsattach socks5`` on a free port, with the lines it printed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.lines = [read_line(self.proc.stdout, "banner line") for _ in range(2)]
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.lines[0])
        assert match, self.lines
        self.port = int(match.group(1))
        ca = re.search(r"CA certificate: (\S+)", self.lines[1])
        self.ca = ca.group(1) if ca else ""

    def stop(self) -> str:
        """SIGTERM; the proxy must exit 0. Returns its log (stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, err
        return err.decode()


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for proxy in started:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
        proxy.proc.communicate()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads curl's output, not the server's log


@pytest.fixture
def web(tmp_path: Any) -> Iterator[int]:
    """Python's http.server on 127.0.0.1 port 0 serving one file, ``hello.txt``."""
    (tmp_path / "hello.txt").write_bytes(b"hello through socks\n")
    handler = partial(_Quiet, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()
        thread.join()


def curl(proxy: Proxy, url: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT),
         "--socks5-hostname", f"127.0.0.1:{proxy.port}", *extra, url],
        capture_output=True, timeout=TIMEOUT + 5, check=False,
    )  # fmt: skip


@needs_curl
def test_curl_through_the_proxy_without_auth(proxies: list[Proxy], web: int) -> None:
    proxies.append(proxy := Proxy())
    assert "SOCKS5, no authentication" in proxy.lines[0]
    assert f"curl --socks5-hostname 127.0.0.1:{proxy.port}" in proxy.lines[1]
    result = curl(proxy, f"http://localhost:{web}/hello.txt")  # the proxy resolves the name
    assert result.stdout == b"hello through socks\n", result.stderr
    log = proxy.stop()
    assert f"localhost:{web}" in log  # the connection's line names its target
    assert "SIGTERM: shutting down" in log


@needs_curl
def test_curl_with_username_and_password_from_the_environment(
    proxies: list[Proxy], web: int
) -> None:
    proxies.append(proxy := Proxy("--username", "alice", env={"TLSATTACH_SOCKS5_PASSWORD": "s3"}))
    assert "username/password" in proxy.lines[0]
    assert "--proxy-user alice:PASSWORD" in proxy.lines[1]
    good = curl(proxy, f"http://127.0.0.1:{web}/hello.txt", "--proxy-user", "alice:s3")
    assert good.stdout == b"hello through socks\n", good.stderr
    bad = curl(proxy, f"http://127.0.0.1:{web}/hello.txt", "--proxy-user", "alice:wrong")
    assert bad.returncode == 97  # curl: could not authenticate to the SOCKS5 proxy
    assert proxy.proc.poll() is None  # a refused client never stops the proxy
    proxy.stop()


async def test_socks_over_tls_with_our_client(proxies: list[Proxy]) -> None:
    proxies.append(proxy := Proxy("--tls", "--username", "u", "--password", "p"))
    assert "SOCKS5 over TLS" in proxy.lines[0]
    assert proxy.ca

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        target = listeners[0].socket.getsockname()[1]
        layer = ta.TLSClientLayer(
            ssl.create_default_context(cafile=proxy.ca), server_hostname="localhost"
        )
        async with ta.ProtocolStack(await ta.open_tcp("127.0.0.1", proxy.port)) as stack:
            tls = await stack.push(layer, deadline=ta.after(TIMEOUT))
            relay = await ta.socks5_client_connect(
                tls, "u", "p", ("127.0.0.1", target), ta.after(TIMEOUT)
            )
            await relay.send_all(b"ping")
            assert await relay.receive_some(deadline=ta.after(TIMEOUT)) == b"ping"
        nursery.cancel_scope.cancel()
    assert f"127.0.0.1:{target}" in proxy.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--password", "p"], "--password needs --username"),
        (["--username", "u"], "--username needs --password"),
        (["--cert", "c.pem"], "--cert and --key go with --tls"),
        (["--tls", "--key", "k.pem"], "--key needs --cert"),
        (["--max-connections", "0"], "--max-connections must be"),
        (["--connect-timeout", "0"], "--connect-timeout must be"),
        (["--idle-timeout", "-1"], "--idle-timeout must be"),
        (["--username", "u", "--password", "x" * 256], "1 to 255 bytes"),
        (["--listen", "-"], "not -"),
        (["--listen", "nonsense"], "HOST:PORT"),
    ],
)
def test_bad_arguments_exit_nonzero(argv: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TLSATTACH_SOCKS5_PASSWORD"}
    result = subprocess.run(
        [*CLI, *argv], capture_output=True, timeout=TIMEOUT, check=False, env=env
    )
    assert result.returncode == 2
    assert message.encode() in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr
