"""SOCKS5 against peers no one here wrote: curl and python-socks through our proxy, our client
through Dante's server (danted).

Everything is on loopback and started by the test: Python's ``http.server`` as the target for
curl, a Trio echo server as the target for our client, our proxy (:func:`serve_socks5`) on port
0, and danted on a port picked by binding port 0, with a configuration written to ``tmp_path``.
danted checks usernames and passwords against the system's users (PAM/passwd): the username
case creates a throwaway user when the test runs as root and is skipped otherwise.
"""

from __future__ import annotations

import errno
import http.server
import os
import secrets
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from python_socks import ProxyError
from python_socks.async_.trio import Proxy
from python_socks.async_.trio.v2 import Proxy as ProxyV2

import trio_tlsattach as ta

from .conftest import TOOL_TIMEOUT, Tool, Tools, free_port, need, tcp_listener

pytestmark = pytest.mark.interop

BODY = b"hello through socks5\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads curl's output, not the server's log."""


class _HTTPServer6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def http_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """Python's http.server on loopback, port 0, in a thread; yields (host, port)."""
    host: str = request.param
    kind = _HTTPServer6 if ":" in host else http.server.ThreadingHTTPServer
    server = kind((host, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield host, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@asynccontextmanager
async def our_proxy(credentials: tuple[str, str] | None) -> AsyncIterator[int]:
    """Our SOCKS5 proxy on 127.0.0.1, port 0; yields its port."""
    listener, port = await tcp_listener()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(ta.serve_socks5, listener, credentials=credentials))
        yield port
        nursery.cancel_scope.cancel()


CREDENTIALS = pytest.mark.parametrize(
    "credentials", [None, ("alice", "s3cret:x")], ids=["noauth", "userpass"]
)


# -- curl through our proxy ----------------------------------------------------------------------


@CREDENTIALS
@pytest.mark.parametrize("flag", ["--socks5", "--socks5-hostname"])
async def test_curl_through_our_proxy(
    tools: Tools, http_server: tuple[str, int], flag: str, credentials: tuple[str, str] | None
) -> None:
    host, port = http_server
    # --socks5 resolves locally and sends an address; --socks5-hostname sends the name.
    name = "localhost" if flag == "--socks5-hostname" and host == "127.0.0.1" else host
    url = f"http://{f'[{name}]' if ':' in name else name}:{port}/"
    async with our_proxy(credentials) as proxy_port:
        user = ["--proxy-user", ":".join(credentials)] if credentials else []
        argv = [need("curl"), "-sS", "--max-time", "20", flag, f"127.0.0.1:{proxy_port}", *user]
        tool = await tools.start([*argv, url])
        assert await tool.wait() == 0, tool.text()
        assert tool.output == BODY


async def test_curl_refused_by_our_proxy(tools: Tools) -> None:
    async with our_proxy(("alice", "s3cret")) as proxy_port:
        argv = [need("curl"), "-sS", "--max-time", "20", "--socks5-hostname"]
        wrong = await tools.start([*argv, f"127.0.0.1:{proxy_port}", "--proxy-user", "alice:no",
                                   "http://localhost:9/"])  # fmt: skip
        assert await wrong.wait() == 97, wrong.text()  # CURLE_PROXY: authentication failed
        none = await tools.start([*argv, f"127.0.0.1:{proxy_port}", "http://localhost:9/"])
        assert await none.wait() == 97, none.text()


# -- python-socks through our proxy --------------------------------------------------------------


@asynccontextmanager
async def echo_target(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A loopback TCP echo server; yields its port."""

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host=host))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@CREDENTIALS
@pytest.mark.parametrize(
    ("target", "rdns"), [("127.0.0.1", False), ("::1", False), ("localhost", True)]
)
async def test_python_socks_through_our_proxy(
    credentials: tuple[str, str] | None, target: str, rdns: bool
) -> None:
    target_host = "::1" if target == "::1" else "127.0.0.1"
    async with echo_target(target_host) as port, our_proxy(credentials) as proxy_port:
        user = f"{credentials[0]}:{credentials[1]}@" if credentials else ""
        proxy = Proxy.from_url(f"socks5://{user}127.0.0.1:{proxy_port}", rdns=rdns)
        sock = await proxy.connect(target, port, timeout=TOOL_TIMEOUT)
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(b"python-socks")
            assert await stream.receive_some() == b"python-socks"


async def test_python_socks_refused() -> None:
    async with echo_target() as port, our_proxy(("alice", "s3cret")) as proxy_port:
        proxy = Proxy.from_url(f"socks5://alice:wrong@127.0.0.1:{proxy_port}")
        with pytest.raises(ProxyError):
            await proxy.connect("127.0.0.1", port, timeout=TOOL_TIMEOUT)
    async with our_proxy(None) as proxy_port:
        proxy = Proxy.from_url(f"socks5://127.0.0.1:{proxy_port}")
        with pytest.raises(ProxyError) as info:
            await proxy.connect("127.0.0.1", free_port(), timeout=TOOL_TIMEOUT)
        assert info.value.error_code == ta.SOCKS5_CONNECTION_REFUSED


async def test_python_socks_over_tls_to_a_tls_target(
    tls_server_cert: trustme.LeafCert, client_ssl_context: ssl.SSLContext
) -> None:
    # SOCKS over TLS with a client no one here wrote: python-socks (v2) speaks TLS to our
    # proxy behind a TLSListener, then TLS to our TLS echo target through it (TLS in TLS, with
    # Python's ssl on its side).
    async def tls_echo(stream: trio.SocketStream) -> None:
        async with await ta.tls_attach_server(stream, tls_server_cert, None, ta.after(5)) as tls:
            while data := await tls.receive_some():
                await tls.send_all(data)

    async with trio.open_nursery() as nursery:
        target = (await nursery.start(partial(trio.serve_tcp, tls_echo, 0, host="127.0.0.1")))[0]
        raw, proxy_port = await tcp_listener()
        listener = ta.TLSListener(raw, ta.TLSServerLayer(tls_server_cert))
        await nursery.start(partial(ta.serve_socks5, listener, credentials=("bob", "pw")))
        proxy = ProxyV2.from_url(
            f"socks5://bob:pw@127.0.0.1:{proxy_port}", rdns=True, proxy_ssl=client_ssl_context
        )
        port = target.socket.getsockname()[1]
        stream = await proxy.connect(
            "localhost", port, dest_ssl=client_ssl_context, timeout=TOOL_TIMEOUT
        )
        await stream.write(b"TLS in TLS")
        assert await stream.read_exactly(10) == b"TLS in TLS"
        await stream.close()
        nursery.cancel_scope.cancel()


# -- our client through danted -------------------------------------------------------------------

DANTE_CONFIG = """\
logoutput: stderr
internal: 127.0.0.1 port = {port}
external: lo
clientmethod: none
socksmethod: {method}
{users}client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: ::/0 }}
"""


@pytest.fixture
def system_user() -> Iterator[tuple[str, str]]:
    """A throwaway system user with a password (danted checks them), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("danted's username method checks system users: creating one needs root")
    need("useradd")
    name, password = f"s5t{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True
    )
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}".encode(), check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False)


@asynccontextmanager
async def danted(tools: Tools, tmp_path: Path, method: str) -> AsyncIterator[int]:
    """danted on 127.0.0.1 with ``socksmethod: method``; yields its port, stops it after."""
    danted_path = need("/usr/sbin/danted")
    config = tmp_path / "danted.conf"

    def argv(port: int) -> list[str]:
        # As root, danted needs to be told whom to run as (root again to read passwords);
        # as anyone else it stays who it is.
        users = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
        config.write_text(DANTE_CONFIG.format(port=port, method=method, users=users))
        pidfile = tmp_path / "danted.pid"  # not /var/run: tests may run side by side
        return [danted_path, "-f", str(config), "-N", "1", "-p", str(pidfile)]

    tool, port = await tools.start_listening(argv, rb"running")
    try:
        yield port
    finally:
        await _stop_politely(tool)


async def _stop_politely(tool: Tool) -> None:
    # SIGTERM, not SIGKILL: danted's mother process then ends its children too.
    with trio.CancelScope(shield=True):
        if tool.process.returncode is None:
            tool.process.terminate()
        with trio.move_on_after(TOOL_TIMEOUT):
            await tool.process.wait()


async def hello_through(proxy_port: int, user: str | None, password: str | None, how: str) -> None:
    target = "::1" if how == "ipv6" else "127.0.0.1"
    async with echo_target(target) as port, await ta.open_tcp("127.0.0.1", proxy_port) as s:
        deadline = ta.after(TOOL_TIMEOUT)
        if how == "name":
            tunnel = await ta.socks5_client_connectbyname(
                s, user, password, "localhost", port, deadline
            )
        else:
            tunnel = await ta.socks5_client_connect(s, user, password, (target, port), deadline)
        assert tunnel is s
        await tunnel.send_all(b"through dante")
        assert await tunnel.receive_some() == b"through dante"


@pytest.mark.parametrize("how", ["ipv4", "ipv6", "name"])
async def test_our_client_through_danted(tools: Tools, tmp_path: Path, how: str) -> None:
    async with danted(tools, tmp_path, "none") as port:
        await hello_through(port, None, None, how)
        await hello_through(port, "ignored", "offered", how)  # danted picks "no auth"


@pytest.mark.parametrize("how", ["ipv4", "name"])
async def test_our_client_through_danted_with_username(
    tools: Tools, tmp_path: Path, system_user: tuple[str, str], how: str
) -> None:
    async with danted(tools, tmp_path, "username") as port:
        await hello_through(port, *system_user, how)


async def test_danted_refusals_have_libdills_errnos(
    tools: Tools, tmp_path: Path, system_user: tuple[str, str]
) -> None:
    async with danted(tools, tmp_path, "username") as port:
        for user, password in [(system_user[0], "wrong"), (None, None)]:
            async with await ta.open_tcp("127.0.0.1", port) as s:
                with pytest.raises(ta.SOCKS5AuthFailed) as info:
                    await ta.socks5_client_connect(
                        s, user, password, ("127.0.0.1", 1), ta.after(TOOL_TIMEOUT)
                    )
                assert info.value.errno == errno.EACCES
        async with await ta.open_tcp("127.0.0.1", port) as s:
            closed = ("127.0.0.1", free_port())
            with pytest.raises(ta.SOCKS5ReplyError) as refused:
                await ta.socks5_client_connect(s, *system_user, closed, ta.after(TOOL_TIMEOUT))
            assert refused.value.errno == errno.ECONNREFUSED
