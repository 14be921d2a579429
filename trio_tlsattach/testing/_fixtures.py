"""The pytest fixtures of the testing kit (registered by :mod:`._plugin`).

Certificates come from trustme and are made once per session (key generation is the slow
part); SSL contexts and transports are made per test, so one test's settings (ALPN, a closed
stream) never leak into the next.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import pytest
import trustme

from .._base import Handle
from ._check import close_stack_of
from ._pairs import TRANSPORT_PAIRS, unix_pair

__all__ = [
    "TRANSPORT_PAIR_NAMES",
    "client_ssl_context",
    "server_ssl_context",
    "short_socket_dir",
    "tls_ca",
    "tls_server_cert",
    "transport_pair",
]

TRANSPORT_PAIR_NAMES: Final = (*TRANSPORT_PAIRS, "unix")
"""The ids of the ``transport_pair`` fixture: socketpair, pipe, memory, tcp, unix."""

# sun_path holds 108 bytes on Linux (104 on the BSDs); stay below either.
_MAX_UNIX_PATH: Final = 100


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A certificate authority made in memory with trustme (one per test session)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate for ``localhost``, ``127.0.0.1`` and ``::1``, issued by ``tls_ca``."""
    return tls_ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture
def server_ssl_context(tls_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A fresh TLS 1.2+ server context holding ``tls_server_cert`` and its key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls_server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A fresh client context that trusts ``tls_ca`` only and verifies the hostname."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls_ca.configure_trust(ctx)  # and no system CAs: only certificates issued by tls_ca pass
    return ctx


@pytest.fixture
def short_socket_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for Unix sockets: ``tmp_path``, or a short temporary one if that is too long."""
    if len(os.fsencode(tmp_path / "transport.sock")) <= _MAX_UNIX_PATH:
        yield tmp_path
        return
    short = tempfile.mkdtemp(prefix="ta-")
    try:
        yield Path(short)
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(params=TRANSPORT_PAIR_NAMES)
async def transport_pair(
    request: pytest.FixtureRequest, short_socket_dir: Path
) -> AsyncIterator[tuple[Handle, Handle]]:
    """Two connected transports, once for each kind: socketpair, pipe, memory, tcp, unix.

    TCP listens on 127.0.0.1 port 0 (an ephemeral port); the Unix socket lives in the test's
    temporary directory. Both transports, and any layer a test left on them, are closed after
    the test.
    """
    name: str = request.param
    pair: tuple[Handle, Handle]
    if name == "unix":
        pair = await unix_pair(short_socket_dir / "transport.sock")
    else:
        pair = await TRANSPORT_PAIRS[name]()
    try:
        yield pair
    finally:
        for handle in pair:
            await close_stack_of(handle)
