"""The tlsattach command, end to end as a subprocess, and its endpoint parsing.

Every server listens on port 0 and the test reads the bound port from the line it prints;
every subprocess is killed at the end, whatever happens.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import TIMEOUT, read_line

import trio_tlsattach as ta
from trio_tlsattach._attributes import describe
from trio_tlsattach._tunnel import (
    Endpoint,
    idle_deadline,
    open_endpoint,
    parse_address,
    parse_endpoint,
)

CLI = [sys.executable, "-m", "trio_tlsattach"]


# --- pure parsing ------------------------------------------------------------------------------


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp:localhost:8080") == Endpoint("tcp", host="localhost", port=8080)
    assert parse_endpoint("tcp:[::1]:443") == Endpoint("tcp", host="::1", port=443)
    assert parse_endpoint("unix:/tmp/s") == Endpoint("unix", path="/tmp/s")
    assert parse_endpoint("exec:cat -u") == Endpoint("exec", command=("cat", "-u"))
    assert parse_endpoint("exec:sh -c 'tr a-z A-Z'") == Endpoint(
        "exec", command=("sh", "-c", "tr a-z A-Z")
    )
    assert parse_endpoint("-") == Endpoint("stdio")
    assert parse_endpoint("echo") == Endpoint("echo")
    for text in ("tcp:localhost:8080", "unix:/tmp/s", "exec:cat -u", "-", "echo"):
        assert str(parse_endpoint(text)) == text
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:8443") == ("::1", 8443)
    assert describe(("::1", 8443, 0, 0)) == "[::1]:8443"
    assert describe(("127.0.0.1", 8443)) == "127.0.0.1:8443"
    assert describe("/run/app.sock") == "/run/app.sock"
    assert describe(None) == describe("") == "-"


@pytest.mark.parametrize(
    "bad", ["tcp:host", "tcp::80", "tcp:h:99999", "tcp:h:-1", "unix:", "exec:", "ftp:x", ""]
)
def test_bad_endpoints_are_einval(bad: str) -> None:
    with pytest.raises(ta.InvalidArgument):
        parse_endpoint(bad)


@pytest.mark.parametrize("bad", ["no-port", "host:", ":80", "h:http"])
def test_bad_addresses_are_einval(bad: str) -> None:
    with pytest.raises(ta.InvalidArgument):
        parse_address(bad)


def test_idle_deadline_takes_only_positive_seconds() -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ta.InvalidArgument, match="idle timeout"), idle_deadline(bad):
            pytest.fail("a bad idle timeout was taken")


async def test_open_endpoint_checks_its_deadline_first() -> None:
    with pytest.raises(ta.InvalidArgument):
        await open_endpoint(Endpoint("tcp", host="127.0.0.1", port=1), deadline=-5)
    with pytest.raises(ta.DeadlineExceeded, match="did not accept in time"):
        await open_endpoint(Endpoint("tcp", host="127.0.0.1", port=1), deadline=ta.IMMEDIATE)


# --- running the command -----------------------------------------------------------------------


class Serve:
    """A running ``tlsattach serve`` on a free port, with the lines it printed."""

    def __init__(
        self,
        *args: str,
        command: list[str] | None = None,
        stdin: Any = None,
        stderr: Any = subprocess.PIPE,  # DEVNULL or a file when the log may outgrow a pipe
    ) -> None:
        self.proc = subprocess.Popen(
            command or [*CLI, "serve", "--listen", "127.0.0.1:0", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        # listening on ..., CA certificate: ..., try: openssl ..., or: tlsattach connect ...
        # (with --ws: listening, CA certificate, try: python -m websockets ...)
        for _ in range(1 if "--cert" in args else 3 if "--ws" in args else 4):
            self.lines.append(read_line(self.proc.stdout, "banner line"))
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.lines[0])
        assert match, self.lines
        self.port = int(match.group(1))
        ca = re.search(r"CA certificate: (\S+)", "".join(self.lines))
        self.ca = ca.group(1) if ca else ""

    def connect(self, data: bytes, *extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*CLI, "connect", f"tcp:127.0.0.1:{self.port}", "--ca", self.ca, *extra],
            input=data, capture_output=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    def stop(self, signum: int = signal.SIGTERM, then: Callable[[], bool] | None = None) -> str:
        """Signal the server, check ``then()``, wait for it to exit; return its log (stderr)."""
        self.proc.send_signal(signum)
        if then is not None:
            assert then()
        _, err = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, err
        return err.decode() if err is not None else ""


@pytest.fixture
def serve() -> Iterator[list[Serve]]:
    """Servers started by a test; whatever happens, they are killed at the end."""
    started: list[Serve] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def tls_client(port: int, ca: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)


def test_default_serve_with_openssl_s_client(serve: list[Serve]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    server = Serve()
    serve.append(server)
    printed = "".join(server.lines)
    line = f"openssl s_client -connect 127.0.0.1:{server.port} -servername localhost -CAfile "
    assert line + server.ca in printed
    assert Path(server.ca).exists()
    client = subprocess.Popen(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
         "-CAfile", server.ca, "-verify_return_error", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
    )  # fmt: skip
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        client.stdin.write(b"hello from s_client\n")
        assert read_line(client.stdout, "echo") == "hello from s_client\n"
    finally:
        client.kill()
        client.communicate()
    log = server.stop()
    assert re.search(r"127\.0\.0\.1:\d+ TLSv1\.3 TLS_\S+ alpn=- in=20 out=20 [\d.]+s", log), log
    assert not Path(server.ca).exists()  # the temporary CA is removed on exit


def test_no_arguments_serves_the_embedded_default(serve: list[Serve]) -> None:
    # The real default is 127.0.0.1:8443; tests never use a fixed port, so only that is changed.
    code = (
        "import sys, trio_tlsattach._cli as cli; cli.DEFAULT_LISTEN = '127.0.0.1:0'; "
        "sys.exit(cli.main([]))"
    )
    server = Serve(command=[sys.executable, "-c", code])
    serve.append(server)
    assert "(TLS, echo backend)" in server.lines[0]
    assert server.lines[2].startswith("try:  openssl s_client -connect 127.0.0.1:")
    result = server.connect(b"default\n", "--servername", "localhost")
    assert result.stdout == b"default\n", result.stderr
    assert "SIGINT: shutting down" in server.stop(signal.SIGINT)


def test_serve_and_connect(serve: list[Serve]) -> None:
    server = Serve()
    serve.append(server)
    printed = "".join(server.lines)
    assert f"tlsattach connect tcp:127.0.0.1:{server.port} --servername localhost" in printed
    result = server.connect(b"through connect\n", "--servername", "localhost")
    assert result.stdout == b"through connect\n", result.stderr
    assert result.returncode == 0
    log = server.stop()
    assert "in=16 out=16" in log
    assert " clean" in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_sends_close_notify_to_live_connections(signum: int, serve: list[Serve]) -> None:
    server = Serve()
    serve.append(server)
    with tls_client(server.port, server.ca) as client:
        client.sendall(b"live")
        assert client.recv(10) == b"live"
        # suppress_ragged_eofs=False: an EOF without close_notify would raise SSLEOFError.
        log = server.stop(signum, then=lambda: client.recv(10) == b"")
    assert f"{signal.Signals(signum).name}: shutting down" in log
    assert re.search(r"in=4 out=4 [\d.]+s shutdown", log), log


def test_hostile_clients_do_not_stop_the_tunnel(serve: list[Serve]) -> None:
    server = Serve("--backend", "exec:cat", "--handshake-timeout", "1")
    serve.append(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as junk:
        junk.sendall(b"GET / HTTP/1.1\r\n\r\n")
        junk.recv(100)  # an alert, then EOF
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as slow:
        slow.sendall(b"\x16\x03\x01")  # then nothing: cut after 1 s
        assert slow.recv(100) == b""
    # Established, then a reset halfway through a record.
    client = tls_client(server.port, server.ca)
    client.sendall(b"ping")
    assert client.recv(10) == b"ping"
    raw = socket.socket(fileno=client.detach())
    raw.sendall(b"\x17\x03\x03\x01\x00" + b"\0" * 10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    result = server.connect(b"still here\n", "--servername", "localhost")
    assert result.stdout == b"still here\n", result.stderr
    log = server.stop()
    assert "handshake failed" in log
    assert "handshake timed out" in log
    assert "in=4 out=4" in log  # the reset connection still got its log line
    assert "error:" in log


def test_exec_backend(serve: list[Serve]) -> None:
    server = Serve("--backend", "exec:tr a-z A-Z")
    serve.append(server)
    result = server.connect(b"shout\n", "--servername", "localhost")
    assert result.stdout == b"SHOUT\n", result.stderr
    server.stop()


def test_stdio_backend(serve: list[Serve]) -> None:
    server = Serve("--backend", "-", stdin=subprocess.PIPE)
    serve.append(server)
    assert server.proc.stdin is not None
    assert server.proc.stdout is not None
    with tls_client(server.port, server.ca) as client:
        client.sendall(b"to the backend\n")
        assert read_line(server.proc.stdout, "forwarded line") == "to the backend\n"
        server.proc.stdin.write(b"from the backend\n")
        server.proc.stdin.close()  # EOF on the backend: close_notify to the client
        server.proc.stdin = None  # closed: communicate() must not touch it
        received = b""
        while data := client.recv(100):
            received += data
        assert received == b"from the backend\n"
    server.stop()


def test_serve_one_connection_on_stdio(tmp_path: Path, tls_ca: Any, tls_server_cert: Any) -> None:
    """inetd style: `serve --listen -` speaks TLS on its stdin/stdout; our `connect exec:` is
    the client, so the whole tunnel is two processes joined by pipes."""
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    tls_server_cert.cert_chain_pems[0].write_to_path(str(cert))
    tls_server_cert.private_key_pem.write_to_path(str(key))
    tls_ca.cert_pem.write_to_path(str(ca))
    server = f"{sys.executable} -m trio_tlsattach serve --listen - --cert {cert} --key {key}"
    result = subprocess.run(
        [*CLI, "connect", f"exec:{server}", "--servername", "localhost", "--ca", str(ca)],
        input=b"over stdio\n", capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"over stdio\n", result.stderr
    assert b"TLSv1.3" in result.stderr  # both ends log their connection line on stderr
    assert b"Traceback" not in result.stderr


def test_connect_exec_endpoint(serve: list[Serve]) -> None:
    socat = shutil.which("socat")
    if socat is None:
        pytest.skip("socat is not installed")
    server = Serve()
    serve.append(server)
    result = subprocess.run(
        [*CLI, "connect", f"exec:{socat} - TCP:127.0.0.1:{server.port}",
         "--servername", "localhost", "--ca", server.ca],
        input=b"over a pipe\n", capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.stdout == b"over a pipe\n", result.stderr
    server.stop()


def test_connect_listen_forwards_plaintext(
    serve: list[Serve], procs: list[subprocess.Popen[Any]]
) -> None:
    server = Serve()
    serve.append(server)
    forward = subprocess.Popen(
        [*CLI, "connect", f"tcp:127.0.0.1:{server.port}", "--servername", "localhost",
         "--ca", server.ca, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip
    procs.append(forward)
    assert forward.stdout is not None
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", read_line(forward.stdout, "banner"))
    assert match
    for n in range(3):
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=TIMEOUT) as s:
            s.sendall(b"plain %d" % n)
            s.shutdown(socket.SHUT_WR)  # half-close travels through as close_notify
            received = b""
            while data := s.recv(100):
                received += data
            assert received == b"plain %d" % n
    forward.send_signal(signal.SIGTERM)
    _, err = forward.communicate(timeout=TIMEOUT)
    assert forward.returncode == 0, err
    assert err.decode().count(" clean") == 3, err
    server.stop()


def test_unix_listener_and_unix_endpoint(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    path = tmp_path / "tls.sock"
    proc = subprocess.Popen(
        [*CLI, "serve", "--listen", f"unix:{path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip
    procs.append(proc)
    assert proc.stdout is not None
    assert f"listening on unix:{path}" in read_line(proc.stdout, "banner")
    read_line(proc.stdout, "CA line")
    ca = re.search(r"--ca (\S+)", read_line(proc.stdout, "try line"))
    assert ca
    result = subprocess.run(
        [*CLI, "connect", f"unix:{path}", "--servername", "localhost", "--ca", ca.group(1)],
        input=b"over unix\n", capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.stdout == b"over unix\n", result.stderr
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert not path.exists()  # the socket file is removed on exit


def test_quiet_and_verbose(serve: list[Serve]) -> None:
    quiet = Serve(command=[*CLI, "--quiet", "serve", "--listen", "127.0.0.1:0"])
    serve.append(quiet)
    assert quiet.connect(b"q", "--servername", "localhost").stdout == b"q"
    assert "in=1 out=1" not in quiet.stop()
    loud = Serve(command=[*CLI, "-v", "serve", "--listen", "127.0.0.1:0"])
    serve.append(loud)
    assert loud.connect(b"v", "--servername", "localhost").stdout == b"v"
    assert "in=1 out=1" in loud.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--listen", "nonsense"], "HOST:PORT"),
        (["serve", "--backend", "ftp:x"], "unknown endpoint"),
        (["serve", "--key", "k.pem"], "--key needs --cert"),
        (["serve", "--cert", "c.pem", "--self-signed"], "exclude each other"),
        (["serve", "--cert", "/nonexistent.pem", "--listen", "127.0.0.1:0"], "tlsattach:"),
        (["connect", "tcp:127.0.0.1:1", "--ca", "/nonexistent.pem"], "tlsattach:"),
        (["connect", "exec:cat"], "--servername"),
        (["serve", "--listen", "-", "--backend", "-"], "both be stdin/stdout"),
        (["serve", "--listen", "-", "--workers", "2"], "one connection"),
        (["serve", "--idle-timeout", "-1"], "--idle-timeout must be"),
        (["serve", "--connect-timeout", "0"], "--connect-timeout must be"),
        (["serve", "--handshake-timeout", "nan"], "--handshake-timeout must be"),
    ],
)
def test_bad_arguments_exit_nonzero(argv: list[str], message: str) -> None:
    result = subprocess.run([*CLI, *argv], capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode != 0
    assert message.encode() in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr


def test_connect_to_nothing_fails_cleanly() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = unused.getsockname()[1]
        result = subprocess.run(
            [*CLI, "connect", f"tcp:127.0.0.1:{port}"],
            input=b"", capture_output=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr


def test_console_script() -> None:
    script = Path(sys.executable).with_name("tlsattach")
    if not script.exists():
        pytest.skip("the console script is not installed")
    result = subprocess.run([script, "--help"], capture_output=True, timeout=TIMEOUT, check=True)
    assert b"serve" in result.stdout
    assert b"connect" in result.stdout


def test_workers_share_the_port(serve: list[Serve]) -> None:
    server = Serve("--workers", "2")
    serve.append(server)
    time.sleep(0.5)  # let the second worker start listening too (either one may answer)
    for n in range(4):
        result = server.connect(f"worker test {n}\n".encode(), "--servername", "localhost")
        assert result.stdout == f"worker test {n}\n".encode(), result.stderr
    log = server.stop()  # the parent stops its workers too
    assert "starting 1 more worker processes" in log


def test_alpn_and_max_connections(serve: list[Serve]) -> None:
    server = Serve("--alpn", "h2", "http/1.1", "--max-connections", "1")
    serve.append(server)
    context = ssl.create_default_context(cafile=server.ca)
    context.set_alpn_protocols(["h2"])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with context.wrap_socket(sock, server_hostname="localhost") as first:
        assert first.selected_alpn_protocol() == "h2"
        first.sendall(b"x")
        assert first.recv(1) == b"x"
        # The only state block is taken: a second client is refused before any handshake.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_client(server.port, server.ca).close()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the block comes back once the server has closed the first connection
        result = server.connect(b"again", "--servername", "localhost", "--alpn", "http/1.1")
        if result.stdout == b"again" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert result.stdout == b"again", result.stderr
    log = server.stop()
    assert "refused: pool exhausted" in log
    assert "alpn=h2" in log
    assert "alpn=http/1.1" in log


def with_fd_limit(soft: int, hard: int) -> list[str]:
    """The CLI command run under another RLIMIT_NOFILE (util-linux's prlimit)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is not installed")
    return [prlimit, f"--nofile={soft}:{hard}", *CLI]


def test_max_connections_shrinks_to_the_fd_limit(serve: list[Serve]) -> None:
    """A hard limit of 80 fits FD_RESERVE (64) and 16 echo connections: the 17th is refused."""
    command = with_fd_limit(80, 80)
    server = Serve(
        command=[*command, "serve", "--listen", "127.0.0.1:0", "--max-connections", "1000"]
    )
    serve.append(server)
    held = [tls_client(server.port, server.ca) for _ in range(16)]
    for sock in held:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    with pytest.raises(ssl.SSLError, match="INTERNAL_ERROR"):  # the listener's clean refusal
        tls_client(server.port, server.ca).close()
    for sock in held:
        sock.close()
    log = server.stop()
    assert "--max-connections 1000 needs more file descriptors" in log
    assert "serving at most 16 connections" in log
    assert "refused: pool exhausted" in log


def test_max_connections_raises_the_soft_fd_limit(serve: list[Serve]) -> None:
    command = with_fd_limit(100, 5000)
    server = Serve(
        command=[*command, "serve", "--listen", "127.0.0.1:0", "--max-connections", "1000"]
    )
    serve.append(server)
    limits = Path(f"/proc/{server.proc.pid}/limits").read_text()
    assert re.search(r"Max open files\s+1064\s+5000", limits), limits  # 1000 + FD_RESERVE
    assert "needs more file descriptors" not in server.stop()


def test_max_connections_with_no_room_at_all_refuses_to_start() -> None:
    command = [*with_fd_limit(64, 64), "serve", "--listen", "127.0.0.1:0", "--max-connections", "9"]
    result = subprocess.run(command, capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    assert b"leaves no room for even one connection" in result.stderr
    assert b"Traceback" not in result.stderr


# --- serve --ws -----------------------------------------------------------------------------------


def ws_client(server: Serve) -> Any:
    """A client of the ``websockets`` package (a peer no one here wrote) over wss://."""
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=server.ca)
    return connect(
        f"wss://127.0.0.1:{server.port}/chat", ssl=context, server_hostname="localhost",
        open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=2**21,
    )  # fmt: skip


def test_ws_echo_with_the_websockets_package(serve: list[Serve]) -> None:
    serve.append(server := Serve("--ws"))
    assert "TLS + WebSocket" in server.lines[0]
    assert "python -m websockets wss://localhost:" in server.lines[2]
    big = bytes(range(256)) * 4096  # 1 MiB
    with ws_client(server) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=TIMEOUT) == "héllo"  # text stays text
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT) == big
        ws.ping(b"p").wait(TIMEOUT)
        ws.close(1000, "OK")
    assert ws.close_code == 1000
    log = server.stop()
    assert f"in={len('héllo'.encode()) + len(big)}" in log
    assert "clean" in log


def test_ws_relays_to_a_backend_as_bytes(serve: list[Serve]) -> None:
    serve.append(server := Serve("--ws", "--backend", "exec:cat"))
    with ws_client(server) as ws:
        ws.send("to the backend")
        assert ws.recv(timeout=TIMEOUT) == b"to the backend"  # bytes come back as binary
        ws.close(1000)
    assert ws.close_code == 1000
    assert "clean" in server.stop()


def test_ws_refuses_a_client_that_is_not_websocket(serve: list[Serve]) -> None:
    serve.append(server := Serve("--ws"))
    with tls_client(server.port, server.ca) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # no Upgrade
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    log = server.stop()
    assert "error:" in log
