"""Interop helpers: certificate files for external tools, and running those tools safely."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

import trio_tlsattach as ta


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


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for tools that must bind themselves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each is killed and reaped at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def wait_for_port(port: int, attempts: int = 200) -> ta.SocketTransport:
    """Connect to a tool that is still starting; retries for a bounded time."""
    import trio

    for _ in range(attempts):
        try:
            return await ta.open_tcp("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")
