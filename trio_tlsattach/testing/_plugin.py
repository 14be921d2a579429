"""pytest plugin of trio_tlsattach: trustme certificates and connected transport pairs.

Registered through the ``pytest11`` entry point (``trio_tlsattach``), so every project that
installs the package gets these fixtures without a conftest:

``tls_ca`` (session)
    a ``trustme.CA`` made in memory.
``tls_server_cert`` (session)
    a ``trustme.LeafCert`` for ``localhost``, ``127.0.0.1`` and ``::1``.
``server_ssl_context`` / ``client_ssl_context``
    fresh ``ssl.SSLContext`` objects: the server holds ``tls_server_cert``; the client trusts
    ``tls_ca`` only and checks the hostname.
``transport_pair``
    two connected transports, parametrized over socketpair, pipe, memory, tcp (127.0.0.1,
    port 0) and unix (a socket in the test's temporary directory); closed after the test.

::

    async def test_echo(transport_pair, tls_ca, tls_server_cert):
        client, server = await tls_pair(*transport_pair, tls_ca, tls_server_cert)
"""

from __future__ import annotations

from ._fixtures import (
    client_ssl_context,
    server_ssl_context,
    short_socket_dir,
    tls_ca,
    tls_server_cert,
    transport_pair,
)

__all__ = [
    "client_ssl_context",
    "server_ssl_context",
    "short_socket_dir",
    "tls_ca",
    "tls_server_cert",
    "transport_pair",
]
