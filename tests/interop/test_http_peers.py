"""The HTTP layer against HTTP implementations no one here wrote, in the clear and over TLS.

curl is the client of a tiny server built on our layer (GET, POST with a body read on the
layer, a malformed and an over-long head each answered with the status the error suggests);
our client talks to Python's ``http.server`` (HTTP/1.0 replies with the body read from the TCP
stream after detach, a 404, two requests on one HTTP/1.1 keep-alive connection by attaching
the layer again, and the same over ``ssl``). Everything listens on 127.0.0.1, port 0.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from _tls_helpers import receive_exactly

import trio_tlsattach as ta
from trio_tlsattach import after

from .conftest import TOOL_TIMEOUT, Certs, need, tcp_listener

pytestmark = pytest.mark.interop


# --- our server, curl's client ------------------------------------------------------------------


async def answer(http: ta.HTTPStream) -> None:
    """Our tiny application: say what was asked (and the body), or why the head was refused."""
    try:
        command, resource = await http.receive_request(after(TOOL_TIMEOUT))
        fields = {name.lower(): value for name, value in await http.receive_fields()}
        body = await receive_exactly(http, int(fields.get("content-length", "0")))
    except ta.HTTPHeadError as exc:
        status, reply = exc.status_hint, f"refused: errno {exc.errno}\n".encode()
    else:
        agent = fields.get("user-agent", "").split("/")[0]
        reply = f"{command} {resource} from {agent}: {body.decode()}\n".encode()
        status = 200
    await http.send_status(status, "OK" if status == 200 else "Refused")
    await http.send_field("Content-Type", "text/plain")
    await http.send_field("Content-Length", str(len(reply)))
    await http.send_field("Connection", "close")
    await http.done()
    await http.send_all(reply)
    await http.send_eof()


@asynccontextmanager
async def our_server(tls: trustme.LeafCert | None = None) -> AsyncIterator[int]:
    """Our layer serving :func:`answer` (behind TLS if ``tls``) until the block ends; its port."""
    listener, port = await tcp_listener()

    async def connection(stream: trio.SocketStream) -> None:
        async with ta.ProtocolStack(stream) as stack:
            if tls is not None:
                await stack.push(ta.TLSServerLayer(tls), after(TOOL_TIMEOUT))
            await answer(await stack.push(ta.HTTPLayer(max_line_size=1024)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, connection, [listener]))
        yield port
        nursery.cancel_scope.cancel()


async def curl(*args: str) -> str:
    """curl's output (``-i``: the response head too); its failure fails the test."""
    argv = [need("curl"), "-sS", "-i", "--max-time", str(TOOL_TIMEOUT), *args]
    with trio.fail_after(TOOL_TIMEOUT):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("latin-1").replace("\r\n", "\n")


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
async def test_curl_against_our_server(
    use_tls: bool, certs: Certs, tls_server_cert: trustme.LeafCert
) -> None:
    async with our_server(tls_server_cert if use_tls else None) as port:
        if use_tls:
            base = f"https://localhost:{port}"
            tls_args = ["--cacert", str(certs.ca_path), "--resolve", f"localhost:{port}:127.0.0.1"]
        else:
            base, tls_args = f"http://127.0.0.1:{port}", []
        out = await curl(*tls_args, f"{base}/hello?x=1")
        assert out.startswith("HTTP/1.1 200 OK\n")
        assert "\nContent-Length: 27\n" in out
        assert out.endswith("\n\nGET /hello?x=1 from curl: \n")
        body = "a body with spaces, and more"
        out = await curl(*tls_args, "--data-binary", body, f"{base}/form")
        assert out.endswith(f"\n\nPOST /form from curl: {body}\n")


@pytest.mark.parametrize(
    ("header", "status"),
    [("Bad Name: x", 400), ("X-Big: " + "a" * 2000, 431)],
    ids=["malformed", "over-long"],
)
async def test_curl_bad_heads_are_answered(header: str, status: int) -> None:
    async with our_server() as port:
        out = await curl("-H", header, f"http://127.0.0.1:{port}/")
        assert out.startswith(f"HTTP/1.1 {status} Refused\n")
        code = 71 if status == 400 else 90  # EPROTO, EMSGSIZE
        assert out.endswith(f"refused: errno {code}\n")
        # The server survived: the next client is served.
        assert (await curl(f"http://127.0.0.1:{port}/again")).endswith("GET /again from curl: \n")


# --- Python's http.server, our client -----------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves files; no log lines on stderr."""

    def log_message(self, format: str, *args: object) -> None:
        return


class _KeepAliveEcho(_Quiet):
    """HTTP/1.1 with keep-alive: a POST's body comes back in capitals."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).upper()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def python_server(
    handler: type[http.server.SimpleHTTPRequestHandler],
    directory: Path,
    tls: ssl.SSLContext | None = None,
) -> Iterator[int]:
    """``http.server`` on 127.0.0.1 port 0 in a thread, serving ``directory``; its port."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(directory))
    )
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def request(
    stack: ta.ProtocolStack, command: str, resource: str, body: bytes = b""
) -> tuple[int, str, dict[str, str], bytes]:
    """One request with our layer pushed on ``stack``; the body is read from the stream below
    after detach. Returns the status, the reason, the fields (lower-case names) and the body."""
    http = await stack.push(ta.HTTPLayer())
    await http.send_request(command, resource)
    await http.send_field("Host", "localhost")
    if body:
        await http.send_field("Content-Length", str(len(body)))
    await http.done()
    await http.send_all(body)
    code, reason = await http.receive_status(after(TOOL_TIMEOUT))
    fields = {name.lower(): value for name, value in await http.receive_fields()}
    below = await stack.pop(after(TOOL_TIMEOUT))  # the body's first bytes come back with it
    assert isinstance(below, ta.ByteStream)
    content = await receive_exactly(below, int(fields["content-length"]))
    return code, reason, fields, content


@pytest.mark.parametrize("use_tls", [False, True], ids=["http", "https"])
async def test_our_client_against_http_server(
    use_tls: bool, tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    (tmp_path / "page.txt").write_bytes(b"served by http.server\n" * 500)
    context = None
    if use_tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_server_cert.configure_cert(context)
    with python_server(_Quiet, tmp_path, context) as port, trio.fail_after(TOOL_TIMEOUT):
        for resource, expected in (("/page.txt", 200), ("/missing", 404)):
            async with ta.ProtocolStack(await ta.open_tcp("127.0.0.1", port)) as stack:
                if use_tls:
                    layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost")
                    await stack.push(layer, after(TOOL_TIMEOUT))
                code, _, fields, content = await request(stack, "GET", resource)
                assert code == expected
                assert fields["server"].startswith("SimpleHTTP/")
                if code == 200:
                    assert content == (tmp_path / "page.txt").read_bytes()


async def test_keep_alive_by_attaching_again(tmp_path: Path) -> None:
    """Two requests on one connection: detach after each response, attach the layer again."""
    with python_server(_KeepAliveEcho, tmp_path) as port, trio.fail_after(TOOL_TIMEOUT):
        async with ta.ProtocolStack(await ta.open_tcp("127.0.0.1", port)) as stack:
            for body in (b"first", b"second and last"):
                code, reason, fields, content = await request(stack, "POST", "/echo", body)
                assert (code, reason) == (200, "OK")
                assert fields["content-length"] == str(len(body))
                assert content == body.upper()
