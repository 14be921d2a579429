"""``tlsattach socks5``: a SOCKS5 proxy on the stack, optionally behind TLS.

Theory of operation
-------------------
The proxy listens where ``--listen`` says (TCP or a Unix socket) and runs each client through
:func:`~trio_tlsattach._socks5proxy.serve_socks5`: method negotiation (no authentication, or
username/password when ``--username`` is given: RFC 1929), the CONNECT command (IPv4, IPv6 or a
name the proxy resolves), a connection to the target within ``--connect-timeout``, then the byte
pump both ways until both sides end or nothing moved for ``--idle-timeout``. BIND and UDP
ASSOCIATE are answered "command not supported", as libdill's proxy does.

With ``--tls`` the listening side is TLS first (a :class:`TLSListener`: handshake deadline,
failed handshakes only cost a log line) and SOCKS5 runs inside it; with no ``--cert`` it makes a
localhost certificate as ``serve`` does and prints its CA. ``--max-connections`` bounds live
clients the way ``serve`` does (and with ``--tls`` bounds the handshakes too, through a state
block pool), raising the descriptor limit to fit. The password comes from ``--password`` or,
better (a command line is visible to every user of the machine), from the
``TLSATTACH_SOCKS5_PASSWORD`` environment variable. Logging, limits and SIGINT/SIGTERM are
``serve``'s: one line per connection (peer, target, bytes each way, duration, outcome) and a
clean shutdown that closes every live connection.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import trio

from ._clicommon import (
    add_limit_options,
    check_limit_options,
    fit_connections,
    listen_address,
    open_listener,
    self_signed,
    unix_path_removed,
    until_signal,
)
from ._listener import TLSListener
from ._mem import StateBlockPool
from ._socks5proxy import serve_socks5
from ._tlslayer import TLSServerLayer

__all__ = ["PASSWORD_ENV", "add_parser", "check_arguments", "run"]

DEFAULT_LISTEN = "127.0.0.1:1080"
PASSWORD_ENV = "TLSATTACH_SOCKS5_PASSWORD"
"""Where ``--username`` finds its password when ``--password`` is not given."""
FDS_PER_CONNECTION = 2  # the client's socket and the target's


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``socks5`` subcommand to ``tlsattach``'s parser."""
    socks5 = sub.add_parser("socks5", help="run a SOCKS5 proxy (optionally behind TLS)")
    socks5.add_argument(
        "--listen", type=listen_address, default=DEFAULT_LISTEN,
        help=f"HOST:PORT or unix:PATH (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )  # fmt: skip
    socks5.add_argument("--username", help="require RFC 1929 username/password authentication")
    socks5.add_argument(
        "--password", help=f"the password for --username (default: ${PASSWORD_ENV})"
    )
    socks5.add_argument("--tls", action="store_true", help="TLS on the listening side")
    socks5.add_argument("--cert", help="with --tls: certificate chain (PEM), or cert and key")
    socks5.add_argument("--key", help="with --tls: private key (PEM)")
    add_limit_options(
        socks5,
        handshake="with --tls: a client gets this long to finish its handshake",
        connect="from a client's first byte to the target's connection",
        connections="bound live clients; one more is closed at once with a log line",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory or meaningless options (argparse's exit status 2)."""
    if args.listen == "-":
        parser.error("socks5 listens on HOST:PORT or unix:PATH, not -")
    if args.password is None and args.username is not None:
        args.password = os.environ.get(PASSWORD_ENV)
        if args.password is None:
            parser.error(f"--username needs --password or ${PASSWORD_ENV}")
    if args.password is not None and args.username is None:
        parser.error("--password needs --username")
    for name in (args.username, args.password):
        if name is not None and not 1 <= len(name.encode()) <= 255:
            parser.error("--username and --password take 1 to 255 bytes (RFC 1929)")
    if (args.cert or args.key) and not args.tls:
        parser.error("--cert and --key go with --tls")
    if args.key and not args.cert:
        parser.error("--key needs --cert")
    check_limit_options(parser, args)


def _print_banner(bound: str, args: argparse.Namespace, ca_path: str | None) -> None:
    auth = "username/password" if args.username else "no authentication"
    print(f"listening on {bound} (SOCKS5{' over TLS' if args.tls else ''}, {auth})", flush=True)
    if ca_path is not None:
        print(f"CA certificate: {ca_path} (removed on exit)", flush=True)
    if args.tls or bound.startswith("unix:"):
        return
    user = f" --proxy-user {args.username}:PASSWORD" if args.username else ""
    print(f"try:  curl --socks5-hostname {bound}{user} http://HOST:PORT/", flush=True)


async def run(args: argparse.Namespace, workdir: str) -> int:
    """Run the proxy until SIGINT/SIGTERM; ``workdir`` holds a self-made certificate."""
    limit = args.max_connections
    if limit:
        limit = fit_connections(limit, FDS_PER_CONNECTION)
    raw, bound = await open_listener(args.listen)
    listener: trio.abc.Listener[Any] = raw
    ca_path = None
    if args.tls:
        if not args.cert:
            args.cert, ca_path = self_signed(workdir)
        pool = StateBlockPool(limit) if limit else None
        layer = TLSServerLayer(args.cert, args.key)
        listener = TLSListener(raw, layer, handshake_deadline=args.handshake_timeout, pool=pool)
    credentials = (args.username, args.password) if args.username else None

    async def serve() -> None:
        _print_banner(bound, args, ca_path)  # once SIGTERM is handled, as serve's banner
        await serve_socks5(
            listener,
            credentials=credentials,
            connect_timeout=args.connect_timeout,
            max_connections=limit,
            idle_timeout=args.idle_timeout or None,
        )

    with unix_path_removed(bound):
        await until_signal(serve)
    return 0
