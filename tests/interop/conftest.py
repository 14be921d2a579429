"""Interop helpers: certificate files for external tools, and running those tools safely.

Every tool runs as a Trio subprocess whose output (stdout and stderr together) is read by a
background task, so a chatty tool never blocks on a full pipe and a test can wait for a line
("ACCEPT 127.0.0.1:41234") instead of sleeping. Each wait has a real-clock bound (the tools run
in real time; MockClock cannot drive them) and every process is killed and reaped when the
test ends, whatever happened. Tools listen on loopback where they can be told to; a port is
either printed by the tool (``openssl s_server -accept 127.0.0.1:0``) or picked by binding
port 0 and retried on a collision (``gnutls-serv`` has no bind-address option).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import trio
import trustme
from _tls_helpers import receive_line

import trio_tlsattach as ta

TOOL_TIMEOUT: Final = 20.0
"""Real seconds any one step involving an external process may take."""

VERSION_FLAGS: Final = {"1.2": "-tls1_2", "1.3": "-tls1_3"}
"""openssl's flag for each TLS version."""


@dataclass
class Certs:
    """PEM files of a trustme CA and a localhost leaf, for tools that need paths."""

    ca: trustme.CA
    leaf: trustme.LeafCert
    ca_path: Path
    cert_path: Path
    key_path: Path


@pytest.fixture
def certs(tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> Certs:
    """The session's CA and leaf as files in ``tmp_path``."""
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    tls_ca.cert_pem.write_to_path(str(ca_path))
    tls_server_cert.cert_chain_pems[0].write_to_path(str(cert_path))
    tls_server_cert.private_key_pem.write_to_path(str(key_path))
    return Certs(tls_ca, tls_server_cert, ca_path, cert_path, key_path)


def need(tool: str) -> str:
    """The tool's path, or skip the test with the reason."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (.ci/run installs it)")
    return path


def s_client(port: int, certs: Certs, *flags: str) -> list[str]:
    """The command line of ``openssl s_client`` to our server on ``port`` (SNI ``localhost``,
    our CA trusted, a failed verification fatal), then ``flags``."""
    return [
        need("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
        "-CAfile", str(certs.ca_path), "-verify_return_error", *flags,
    ]  # fmt: skip


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for tools that must bind themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def tcp_listener() -> tuple[trio.SocketListener, int]:
    """A TCP listener on 127.0.0.1, port 0 (chosen by the kernel), and its port."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port: int = listener.socket.getsockname()[1]
    return listener, port


async def echo_one_line(
    listener: trio.SocketListener, certs: Certs, seen: dict[str, object]
) -> None:
    """Our TLS server for one client: record what was negotiated in ``seen``, echo one line.

    Offers ALPN ``h2`` and ``http/1.1``; ``aclose`` sends close_notify, on which the tools end.
    """
    raw = await listener.accept()
    tls = await ta.TLSServerLayer(certs.leaf, alpn=["h2", "http/1.1"]).attach(
        raw, ta.after(TOOL_TIMEOUT)
    )
    async with tls:
        seen.update(version=tls.tls_version, alpn=tls.alpn, sni=tls.server_hostname)
        line = seen["got"] = await receive_line(tls)
        await tls.send_all(b"echo:" + line)


Server = Callable[[trio.SocketListener, Certs, dict[str, object]], Awaitable[None]]
"""Our side of an interop test: serves one client from the listener, notes what it saw."""


async def tool_client_to_our_server(
    tools: Tools,
    certs: Certs,
    make_argv: Callable[[int], Sequence[str]],
    line: bytes,
    serve: Server = echo_one_line,
    answer: bytes | None = None,
) -> tuple[dict[str, object], Tool, int]:
    """Our server (by default :func:`echo_one_line`) on a fresh port, a tool as its client.

    ``make_argv(port)`` is the tool's command line; it is sent ``line`` on its standard input,
    which is closed once the tool printed ``answer`` (a regex; by default the echo of
    ``line``). Returns what our server noted, the tool, and its exit code.
    """
    listener, port = await tcp_listener()
    seen: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, listener, certs, seen)
        tool = await tools.start(make_argv(port), stdin=subprocess.PIPE)
        assert tool.process.stdin is not None
        await tool.process.stdin.send_all(line)
        expected = re.escape(b"echo:" + line) if answer is None else answer
        assert await tool.expect(expected), tool.text()
        await tool.process.stdin.aclose()  # some tools end on EOF, others on our close_notify
        code = await tool.wait()
    await listener.aclose()
    return seen, tool, code


async def our_client_to_tool_server(
    port: int, certs: Certs, line: bytes, answer: bytes
) -> dict[str, object]:
    """Our TLS client (SNI ``localhost``, ALPN ``http/1.1``) to a tool listening on ``port``.

    Sends ``line`` and reads until ``answer`` comes back; returns what was negotiated.
    """
    with trio.fail_after(TOOL_TIMEOUT):
        raw = await ta.open_tcp("127.0.0.1", port)
        layer = ta.TLSClientLayer(certs.ca, server_hostname="localhost", alpn=["http/1.1"])
        tls = await layer.attach(raw, ta.after(TOOL_TIMEOUT))
        async with tls:
            await tls.send_all(line)
            got = b""
            while answer not in got:
                chunk = await tls.receive_some(100)
                assert chunk, f"the server closed after {got!r}"
                got += chunk
            return {
                "version": tls.tls_version,
                "alpn": tls.alpn,
                "sni": tls.server_hostname,
                "peer_cert": tls.peer_cert is not None,
            }


async def wait_for_port(port: int, attempts: int = 200) -> ta.SocketTransport:
    """Connect to a tool that is still starting; retries a bounded number of times.

    Prefer :meth:`Tool.expect` on the tool's "listening" line: it needs no polling.
    """
    for _ in range(attempts):
        try:
            return await ta.open_tcp("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Blocking-API processes a test starts; each is killed and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TOOL_TIMEOUT)


class Tool:
    """One running external process and everything it printed so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = bytearray()
        self.finished = False  # its output reached end of file
        self._changed = trio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for chunk in self.process.stdout:
                self.output += chunk
                self._changed.set()
        except trio.ClosedResourceError:
            pass  # stopped while reading
        finally:
            self.finished = True
            self._changed.set()

    async def _output_changed(self) -> None:
        self._changed = trio.Event()
        await self._changed.wait()

    async def expect(self, pattern: bytes) -> re.Match[bytes] | None:
        """Wait for ``pattern`` (a regex) in the output; None if the tool ended without it."""
        with trio.fail_after(TOOL_TIMEOUT):
            while True:
                match = re.search(pattern, self.output)
                if match is not None:
                    return match
                if self.finished:
                    return None
                await self._output_changed()

    async def wait(self) -> int:
        """Wait for the tool to exit by itself, and for the last of its output; its exit code."""
        with trio.fail_after(TOOL_TIMEOUT):
            code = await self.process.wait()
            while not self.finished:
                await self._output_changed()
            return code

    def text(self) -> str:
        return self.output.decode(errors="replace")


class Tools:
    """Starts tools for one test; the fixture kills and reaps them all at its end."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._started: list[Tool] = []

    async def start(self, argv: Sequence[str], stdin: int | None = subprocess.DEVNULL) -> Tool:
        process = await trio.lowlevel.open_process(
            list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        tool = Tool(process)
        self._started.append(tool)
        self._nursery.start_soon(tool._read)
        return tool

    async def start_listening(
        self, make_argv: Callable[[int], Sequence[str]], ready: bytes, attempts: int = 5
    ) -> tuple[Tool, int]:
        """Start a server on a port picked here; on a collision, retry on another port.

        ``make_argv(port)`` gives the command line; ``ready`` is the pattern it prints once it
        listens. Returns the tool and its port.
        """
        for _ in range(attempts):
            port = free_port()
            tool = await self.start(make_argv(port))
            if await tool.expect(ready) is not None:
                return tool, port
            await self.stop(tool)  # it exited without listening: the port was taken
        raise AssertionError(f"the server never listened: {tool.text()}")

    async def stop(self, tool: Tool) -> None:
        """Kill (if still running) and reap ``tool``; close our ends of its pipes."""
        with trio.CancelScope(shield=True):
            if tool.process.returncode is None:
                tool.process.kill()
            with trio.move_on_after(TOOL_TIMEOUT):
                await tool.process.wait()
                while not tool.finished:  # let the reader see the end of the output
                    await tool._output_changed()
            if tool.process.stdin is not None:
                await tool.process.stdin.aclose()
            if tool.process.stdout is not None:
                await tool.process.stdout.aclose()

    async def stop_all(self) -> None:
        for tool in self._started:
            await self.stop(tool)


@pytest.fixture
async def tools() -> AsyncIterator[Tools]:
    """Start external tools with ``await tools.start(argv)``; all are killed at the end."""
    async with trio.open_nursery() as nursery:
        started = Tools(nursery)
        try:
            yield started
        finally:
            await started.stop_all()
            nursery.cancel_scope.cancel()
