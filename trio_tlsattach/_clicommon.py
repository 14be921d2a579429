"""What the ``tlsattach`` subcommands share that is not the tunnel itself.

Theory of operation
-------------------
Every subcommand that listens (``serve``, ``connect --listen``, ``socks5``) parses its address
with the same argparse types, listens through :func:`open_listener` (TCP, SO_REUSEPORT for
``--workers``, or a Unix socket whose file is removed on the way out), runs under
:func:`until_signal` (SIGINT/SIGTERM cancel the server, whose connections then close cleanly),
and writes one log line per connection, its outcome from ``_tunnel.failure``.

With no ``--cert``, ``serve`` makes a certificate for localhost in memory: a CA from trustme,
and a leaf signed by that CA that strict RFC 5280 path validation accepts. trustme's own leaf
is made for test suites: its subject is not empty and its subjectAltName is marked critical,
which RFC 5280 4.2.1.6 forbids, so strict verifiers (cryptography's, used by sslyze; webpki)
refuse the chain. The leaf here is what a public CA would issue for a TLS server: subject
``CN=localhost``, a non-critical subjectAltName (``localhost``, ``127.0.0.1``, ``::1``),
``serverAuth`` only, a P-256 key (the cheapest handshake), a year of validity.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator

import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._errors import StackError
from ._listener import fit_fd_limit
from ._tunnel import Endpoint, describe, parse_address, parse_endpoint

__all__ = [
    "LEAF_VALIDITY",
    "add_limit_options",
    "check_limit_options",
    "endpoint_arg",
    "fit_connections",
    "listen_address",
    "log",
    "open_listener",
    "self_signed",
    "stdio_blocking_restored",
    "unix_path_removed",
    "until_signal",
]

log = logging.getLogger("trio_tlsattach")

LEAF_VALIDITY = datetime.timedelta(days=365)
"""How long the default leaf certificate is valid (from an hour before it is made)."""


def _leaf(ca: trustme.CA, names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    """A leaf for ``names`` signed by ``ca``: (certificate PEM, private key PEM)."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    signer = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)  # trustme's default key type
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed(directory: str) -> tuple[str, str]:
    """A localhost certificate made in memory; returns (cert+key PEM path, CA PEM path).

    Both files are written to ``directory`` (the caller removes it), so that worker processes
    load the same certificate and a client can be pointed at the CA.
    """
    ca = trustme.CA()
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert_pem, key_pem = _leaf(ca, names)
    ca_path = os.path.join(directory, "ca.pem")
    leaf_path = os.path.join(directory, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    with open(leaf_path, "wb") as f:
        f.write(key_pem + cert_pem)
    return leaf_path, ca_path


# --- arguments, listening, signals ---------------------------------------------------------


def endpoint_arg(text: str) -> Endpoint:
    """argparse type of an endpoint (``--backend``, ``connect``'s target)."""
    try:
        return parse_endpoint(text)
    except StackError as exc:
        raise argparse.ArgumentTypeError(exc.strerror) from None


def listen_address(text: str) -> str:
    """argparse type of ``--listen``: ``HOST:PORT``, ``unix:PATH`` or ``-``."""
    if text == "-":
        return text
    if not text.startswith("unix:"):
        try:
            parse_address(text)
        except StackError as exc:
            raise argparse.ArgumentTypeError(exc.strerror) from None
    elif len(text) == 5:
        raise argparse.ArgumentTypeError("unix: needs a path")
    return text


async def reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener with SO_REUSEPORT, so worker processes can share its port."""
    info = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    family, kind, proto, _, address = info[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind(address)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def open_listener(address: str, reuse_port: bool = False) -> tuple[trio.SocketListener, str]:
    """Listen on ``HOST:PORT`` or ``unix:PATH``; returns the listener and its bound address."""
    if address.startswith("unix:"):
        path = address[5:]
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        try:
            await sock.bind(path)
            sock.listen()
        except BaseException:
            sock.close()
            raise
        return trio.SocketListener(sock), f"unix:{path}"
    host, port = parse_address(address)
    if reuse_port:
        listener = await reuse_port_listener(host, port)
    else:
        listener = (await trio.open_tcp_listeners(port, host=host))[0]
    return listener, describe(listener.socket.getsockname())


@contextlib.contextmanager
def unix_path_removed(bound: str) -> Iterator[None]:
    """Remove the Unix socket file we created, on the way out."""
    try:
        yield
    finally:
        if bound.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(bound[5:])


@contextlib.contextmanager
def stdio_blocking_restored() -> Iterator[None]:
    """Put stdin/stdout back in their blocking mode afterwards (our pipe transport changes it)."""
    saved = {}
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            saved[fd] = os.get_blocking(fd)
    try:
        yield
    finally:
        for fd, blocking in saved.items():
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)


async def until_signal(run: Callable[[], Awaitable[object]]) -> None:
    """Run ``run()`` until it returns or SIGINT/SIGTERM arrives, then cancel it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()

            async def main_task() -> None:
                await run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(main_task)


def fit_connections(wanted: int, fds_per_connection: int) -> int:
    """``--max-connections``, shrunk (with a warning) to what the descriptor limit fits.

    Raises the soft ``RLIMIT_NOFILE`` as far as needed; exits when not even one fits.
    """
    fits = fit_fd_limit(wanted, fds_per_connection)
    if fits < 1:
        raise SystemExit(
            "tlsattach: the open files limit (ulimit -n) leaves no room for even one "
            "connection; raise it or drop --max-connections"
        )
    if fits < wanted:
        log.warning(
            "--max-connections %d needs more file descriptors than the hard limit (ulimit -Hn) "
            "allows: serving at most %d connections",
            wanted,
            fits,
        )
    return fits


def add_limit_options(
    parser: argparse.ArgumentParser, *, handshake: str, connect: str, connections: str
) -> None:
    """The options every server subcommand bounds its connections with (``serve``, ``socks5``).

    The help texts say what each bound means for that subcommand.
    """
    parser.add_argument(
        "--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
        help=f"{handshake} (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="SECONDS",
        help=f"{connect} (default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--idle-timeout", type=float, default=600.0, metavar="SECONDS",
        help="end a connection when no byte moved either way for this long (default 600; "
        "0: never)",
    )  # fmt: skip
    parser.add_argument("--max-connections", type=int, metavar="N", help=connections)


def check_limit_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bounds that mean nothing (argparse's exit status 2)."""
    if args.max_connections is not None and args.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    for option in ("handshake_timeout", "connect_timeout"):
        if not getattr(args, option) > 0:
            parser.error(f"--{option.replace('_', '-')} must be a positive number of seconds")
    if not args.idle_timeout >= 0:
        parser.error("--idle-timeout must be 0 (never) or a positive number of seconds")
