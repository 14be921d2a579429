"""The tlsattach command, end to end as a subprocess, and its endpoint parsing."""

from __future__ import annotations

import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import trio_tlsattach as ta
from trio_tlsattach._tunnel import Endpoint, parse_address, parse_endpoint

CLI = [sys.executable, "-m", "trio_tlsattach"]


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp:localhost:8080") == Endpoint("tcp", host="localhost", port=8080)
    assert parse_endpoint("tcp:[::1]:443") == Endpoint("tcp", host="::1", port=443)
    assert parse_endpoint("unix:/tmp/s") == Endpoint("unix", path="/tmp/s")
    assert parse_endpoint("exec:cat -u") == Endpoint("exec", command=("cat", "-u"))
    assert parse_endpoint("-") == Endpoint("stdio")
    assert parse_endpoint("echo") == Endpoint("echo")
    assert str(parse_endpoint("exec:cat -u")) == "exec:cat -u"


@pytest.mark.parametrize(
    "bad", ["tcp:host", "tcp::80", "tcp:h:99999", "unix:", "exec:", "ftp:x", ""]
)
def test_bad_endpoints_are_einval(bad: str) -> None:
    with pytest.raises(ta.InvalidArgument):
        parse_endpoint(bad)
    with pytest.raises(ta.InvalidArgument):
        parse_address("no-port")


class Serve:
    """A running ``tlsattach serve`` on a free port, with the lines it printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        for _ in range(4):
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if line.startswith("  or:") or "unix:" in line:
                break
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.lines[0])
        assert match, self.lines
        self.port = int(match.group(1))
        ca = re.search(r"CA certificate: (\S+)", "".join(self.lines))
        self.ca = ca.group(1) if ca else ""

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, err
        return err


@pytest.fixture
def serve() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.communicate()


def test_default_serve_with_openssl_s_client(serve: list[Serve]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    server = Serve()
    serve.append(server)
    printed = "".join(server.lines)
    assert "openssl s_client -connect" in printed
    assert Path(server.ca).exists()
    client = subprocess.Popen(
        [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
         "-CAfile", server.ca, "-verify_return_error", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        client.stdin.write(b"hello from s_client\n")
        client.stdin.flush()
        ready, _, _ = select.select([client.stdout], [], [], 20)
        assert ready, "no echo within 20 s"
        assert client.stdout.readline() == b"hello from s_client\n"
    finally:
        client.kill()
        client.communicate()
    log = server.stop()
    assert "TLSv1.3" in log  # the per-connection log line


def test_serve_and_connect(serve: list[Serve]) -> None:
    server = Serve()
    serve.append(server)
    result = subprocess.run(
        [*CLI, "connect", f"tcp:127.0.0.1:{server.port}", "--servername", "localhost",
         "--ca", server.ca],
        input=b"through connect\n", capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.stdout == b"through connect\n", result.stderr
    log = server.stop()
    assert "in=16 out=16" in log
    assert "clean" in log


def test_exec_backend(serve: list[Serve]) -> None:
    server = Serve("--backend", "exec:tr a-z A-Z")
    serve.append(server)
    result = subprocess.run(
        [*CLI, "connect", f"tcp:127.0.0.1:{server.port}", "--servername", "localhost",
         "--ca", server.ca],
        input=b"shout\n", capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.stdout == b"SHOUT\n", result.stderr
    server.stop()


def test_unix_listener_and_unix_endpoint(tmp_path: Path, serve: list[Serve]) -> None:
    path = tmp_path / "tls.sock"
    proc = subprocess.Popen(
        [*CLI, "serve", "--listen", f"unix:{path}"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert f"unix:{path}" in proc.stdout.readline()
    try:
        result = subprocess.run(
            [*CLI, "connect", f"unix:{path}", "--insecure"],
            input=b"over unix\n", capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        assert result.stdout == b"over unix\n", result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_bad_arguments_exit_nonzero() -> None:
    result = subprocess.run(
        [*CLI, "serve", "--listen", "nonsense"], capture_output=True, timeout=20, check=False
    )
    assert result.returncode != 0
    assert b"HOST:PORT" in result.stderr


def test_workers_share_the_port(serve: list[Serve]) -> None:
    server = Serve("--workers", "2")
    serve.append(server)
    for n in range(4):
        result = subprocess.run(
            [*CLI, "connect", f"tcp:127.0.0.1:{server.port}", "--servername", "localhost",
             "--ca", server.ca],
            input=f"worker test {n}\n".encode(), capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.stdout == f"worker test {n}\n".encode(), result.stderr
    log = server.stop()  # the parent stops its workers too
    assert "starting 1 more worker processes" in log


async def test_sigterm_sends_close_notify_to_live_connections(serve: list[Serve]) -> None:
    import trio

    server = Serve()
    serve.append(server)
    raw = await ta.open_tcp("127.0.0.1", server.port)
    tls = await ta.TLSClientLayer(server.ca, server_hostname="localhost").attach(raw)
    await tls.send_all(b"ping")
    assert await tls.receive_some(10) == b"ping"
    await trio.to_thread.run_sync(server.stop)
    assert await tls.receive_some(10) == b""  # a clean TLS close, not ECONNRESET
    await tls.aclose()
