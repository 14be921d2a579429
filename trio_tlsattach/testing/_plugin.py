"""pytest plugin: certificates made with trustme and connected transport pairs.

Registered through the ``pytest11`` entry point, so any project that installs trio_tlsattach
gets these fixtures::

    async def test_echo(transport_pair, tls_ca, tls_server_cert):
        a, b = transport_pair
        client, server = await tls_pair(a, b, tls_ca, tls_server_cert)
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from .._base import Handle
from ._pairs import TRANSPORT_PAIRS, unix_pair


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A certificate authority made in memory (trustme)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate for localhost, 127.0.0.1 and ::1, issued by ``tls_ca``."""
    return tls_ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture
def server_ssl_context(tls_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding ``tls_server_cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls_server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts ``tls_ca``."""
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    return ctx


@pytest.fixture(params=[*TRANSPORT_PAIRS, "unix"])
async def transport_pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Handle, Handle]]:
    """Two connected transports, once per kind: socketpair, pipe, memory, tcp, unix."""
    pair: tuple[Handle, Handle]
    if request.param == "unix":
        pair = await unix_pair(tmp_path_factory.mktemp("unix") / "s")
    else:
        pair = await TRANSPORT_PAIRS[request.param]()
    yield pair
    for handle in pair:
        if handle.status != "owned":
            await handle.aclose()
