"""``tlsattach``: a TLS tunnel in the spirit of stunnel, built on the stack.

Theory of operation
-------------------
``tlsattach serve`` terminates TLS: it listens (TCP or a Unix socket), runs each handshake
through a :class:`TLSListener` (handshake deadline, optional bounded pool), and pumps each
connection to a backend endpoint, ``echo`` by default. With no certificate it makes a
self-signed one for localhost in memory with trustme and writes its CA to a temporary file,
printing the exact ``openssl s_client`` line to try it.

``tlsattach connect ENDPOINT`` originates TLS: it connects to a TLS server and pumps stdin and
stdout through it, or, with ``--listen``, accepts plaintext connections locally and forwards each
over TLS.

Each connection ends with one log line: peer, TLS version, cipher, ALPN, bytes each way,
duration and how it ended. SIGINT/SIGTERM stop the server cleanly: live connections are closed,
which sends them close_notify.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import trio
import trustme

from ._base import StackAttribute
from ._deadline import after
from ._errors import StackError
from ._listener import TLSListener
from ._mem import StateBlockPool
from ._tls import TLSClientLayer, TLSServerLayer, TLSStream
from ._transports import open_pipe, wrap_stream
from ._tunnel import describe, echo, open_endpoint, parse_address, parse_endpoint, pump

log = logging.getLogger("trio_tlsattach")

DEFAULT_LISTEN = "127.0.0.1:8443"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsattach", description="TLS tunnels on trio_tlsattach's protocol stacks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="terminate TLS and forward to a backend")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT or unix:PATH")
    serve.add_argument("--cert", help="certificate chain (PEM)")
    serve.add_argument("--key", help="private key (PEM)")
    serve.add_argument("--self-signed", action="store_true", help="make a localhost cert")
    serve.add_argument("--backend", default="echo", help="endpoint (default: echo)")
    serve.add_argument("--alpn", nargs="*", help="ALPN protocols to offer")
    serve.add_argument("--handshake-timeout", type=float, default=10.0)
    serve.add_argument("--max-connections", type=int, help="bound live connections")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    connect = sub.add_parser("connect", help="originate TLS to a server")
    connect.add_argument("endpoint", help="the TLS server: tcp:HOST:PORT or unix:PATH")
    connect.add_argument("--ca", help="CA file to trust (default: the system's)")
    connect.add_argument("--servername", help="hostname to verify (default: the endpoint's)")
    connect.add_argument("--insecure", action="store_true", help="do not verify the server")
    connect.add_argument("--alpn", nargs="*")
    connect.add_argument("--listen", help="accept plaintext here (HOST:PORT) and forward each")
    return parser


def _self_signed() -> tuple[str, str]:
    """A localhost certificate made in memory; returns (cert+key PEM path, CA PEM path)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
    directory = tempfile.mkdtemp(prefix="tlsattach-")
    ca_path = os.path.join(directory, "ca.pem")
    leaf_path = os.path.join(directory, "server.pem")  # workers load the same certificate
    ca.cert_pem.write_to_path(ca_path)
    leaf.private_key_and_cert_chain_pem.write_to_path(leaf_path)
    return leaf_path, ca_path


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener with SO_REUSEPORT, so worker processes can share its port."""
    info = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    family, kind, proto, _, address = info[0]
    sock = trio.socket.socket(family, kind, proto)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
    await sock.bind(address)
    sock.listen()
    return trio.SocketListener(sock)


async def _open_listener(
    address: str, reuse_port: bool = False
) -> tuple[trio.abc.Listener[Any], str]:
    if address.startswith("unix:"):
        path = address[5:]
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(path)
        sock.listen()
        return trio.SocketListener(sock), f"unix:{path}"
    host, port = parse_address(address)
    if reuse_port:
        listener = await _reuse_port_listener(host, port)
    else:
        listener = (await trio.open_tcp_listeners(port, host=host))[0]
    return listener, describe(listener.socket.getsockname())


def _connection_line(tls: TLSStream, started: float, counts: tuple[int, int], how: str) -> str:
    peer = describe(tls.extra(StackAttribute.remote_address, None))
    cipher = tls.cipher()
    return (
        f"{peer} {tls.version()} {cipher[0] if cipher else '-'} alpn={tls.alpn or '-'} "
        f"in={counts[0]} out={counts[1]} {time.monotonic() - started:.3f}s {how}"
    )


async def _serve(args: argparse.Namespace) -> int:
    ca_path = None
    if not args.cert:
        args.cert, ca_path = _self_signed()
    layer = TLSServerLayer(args.cert, args.key, alpn=args.alpn)
    backend = parse_endpoint(args.backend)
    workers = args.workers > 1 and not args.listen.startswith("unix:")
    raw, bound = await _open_listener(args.listen, reuse_port=workers or args.reuse_port)
    pool = StateBlockPool(args.max_connections) if args.max_connections else None
    listener = TLSListener(raw, layer, handshake_deadline=args.handshake_timeout, pool=pool)

    print(f"listening on {bound} (TLS, {backend} backend)", flush=True)
    if ca_path is not None and not bound.startswith("unix:"):
        host, port = parse_address(bound)
        print(f"CA certificate: {ca_path}", flush=True)
        print(
            f"try:  openssl s_client -connect {bound} -servername localhost -CAfile {ca_path}\n"
            f"  or: tlsattach connect tcp:{host}:{port} --servername localhost --ca {ca_path}",
            flush=True,
        )

    async def handle(tls: TLSStream) -> None:
        started = time.monotonic()
        counts, how = (0, 0), "closed"
        try:
            if backend.kind == "echo":
                counts = await echo(tls)
            else:
                async with await open_endpoint(backend) as far:
                    counts = await pump(tls, far)
            how = "clean"
        except (StackError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            how = f"error: {exc}"
        finally:
            log.info("%s", _connection_line(tls, started, counts, how))

    children = await _start_workers(args, bound) if workers else []
    try:
        await _until_signal(listener.serve, handle)
    finally:
        with trio.CancelScope(shield=True):
            for child in children:
                child.terminate()
                await child.wait()
    return 0


async def _start_workers(args: argparse.Namespace, bound: str) -> list[trio.Process]:
    """``--workers N``: N-1 more processes serving the same port (the kernel spreads accepts)."""
    command = [sys.executable, "-m", "trio_tlsattach", "serve", "--listen", bound, "--reuse-port",
               "--cert", args.cert, "--backend", args.backend,
               "--handshake-timeout", str(args.handshake_timeout)]  # fmt: skip
    if args.key:
        command += ["--key", args.key]
    if args.alpn:
        command += ["--alpn", *args.alpn]
    if args.max_connections:
        command += ["--max-connections", str(args.max_connections)]
    log.info("starting %d more worker processes on %s", args.workers - 1, bound)
    return [
        await trio.lowlevel.open_process(command, stdout=subprocess.DEVNULL)
        for _ in range(args.workers - 1)
    ]


async def _until_signal(serve: Any, handler: Any) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, handler)
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


async def _connect(args: argparse.Namespace) -> int:
    endpoint = parse_endpoint(args.endpoint)
    if endpoint.kind not in ("tcp", "unix"):
        print("connect needs a tcp: or unix: endpoint", file=sys.stderr)
        return 2
    context = ssl.create_default_context(cafile=args.ca)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    hostname = args.servername or (endpoint.host if endpoint.kind == "tcp" else None)
    if hostname is None and context.check_hostname:
        print("unix: endpoints need --servername (or --insecure)", file=sys.stderr)
        return 2
    layer = TLSClientLayer(context, server_hostname=hostname, alpn=args.alpn)

    async def one(local: Any) -> None:
        far = await open_endpoint(endpoint)
        tls = await layer.attach(far, after(30))
        async with tls, wrap_stream(local) as near:
            started = time.monotonic()
            counts = await pump(near, tls)  # type: ignore[arg-type]
            log.info("%s", _connection_line(tls, started, counts, "clean"))

    if args.listen is None:
        await one(open_pipe(os.dup(0), os.dup(1)))
        return 0
    raw, bound = await _open_listener(args.listen)
    print(f"listening on {bound} (plaintext, forwarding over TLS to {endpoint})", flush=True)

    async def serve(handler: Any) -> None:
        await trio.serve_listeners(handler, [raw])

    await _until_signal(serve, one)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tlsattach`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.command in (None, "serve"):
        if args.command is None:
            args = _parser().parse_args([*(argv or []), "serve"])
        runner = _serve
    else:
        runner = _connect
    try:
        return trio.run(runner, args)
    except (StackError, OSError) as exc:
        print(f"tlsattach: {exc}", file=sys.stderr)
        return 1
