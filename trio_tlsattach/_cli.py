"""``tlsattach``: a TLS tunnel in the spirit of stunnel, built on the stack.

Theory of operation
-------------------
``tlsattach serve`` terminates TLS: it listens (TCP or a Unix socket; or, with ``--listen -``,
serves the one connection inetd or systemd put on stdin/stdout), runs each handshake
through a :class:`TLSListener` (handshake deadline, optional bounded pool), and pumps each
connection to a backend endpoint, ``echo`` by default. With no certificate it makes a
self-signed one for localhost in memory with trustme and writes its CA to a temporary directory
(removed on exit), printing the exact ``openssl s_client`` line to try it. ``--workers N``
starts N-1 more processes that share the port through SO_REUSEPORT; the kernel spreads the
connections among them.

With ``--ws`` each connection speaks WebSocket inside TLS (``wss://``): messages are echoed, or
relayed to the backend as bytes and the backend's bytes come back as binary messages
(websockify's job; ``_wsrelay``).

``tlsattach connect ENDPOINT`` originates TLS: it connects to a TLS server (over TCP, a Unix
socket or a command's stdin/stdout) and pumps our stdin and stdout through it, or, with
``--listen``, accepts plaintext connections locally and forwards each over TLS.

Each connection ends with one log line on stderr: peer, TLS version, cipher, ALPN, bytes each
way, duration and how it ended; a connection whose handshake failed gets one line too.
SIGINT/SIGTERM stop the server cleanly: live connections are closed with a close_notify.
A backend that does not accept within ``--connect-timeout`` and a connection where no byte
moved for ``--idle-timeout`` end that connection (one log line each). ``--max-connections``
raises the process's descriptor limit to fit; when the hard limit is lower, the pool is
shrunk to what fits, with a warning (and ``serve`` refuses to start if not even one fits).
Endpoint and address parsing, and the byte pump, are in ``_tunnel``; listening, signals and
the default certificate in ``_clicommon``; ``tlsattach socks5`` (a SOCKS5 proxy, optionally
behind TLS) in ``_clisocks5``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ._clicommon import (
    add_limit_options,
    check_limit_options,
    endpoint_arg,
    fit_connections,
    listen_address,
    log,
    open_listener,
    self_signed,
    stdio_blocking_restored,
    unix_path_removed,
    until_signal,
)
from ._clisocks5 import add_parser as add_socks5_parser
from ._clisocks5 import check_arguments as check_socks5_arguments
from ._clisocks5 import run as run_socks5
from ._connect import open_pipe
from ._deadline import after
from ._errors import StackError
from ._listener import TLSListener
from ._mem import StateBlockPool
from ._tls import TLSStream
from ._tlslayer import TLSClientLayer, TLSServerLayer
from ._transports import wrap_stream
from ._tunnel import (
    STREAM_ERRORS,
    Endpoint,
    echo,
    failure,
    open_endpoint,
    peer_of,
    pump,
    reset,
)
from ._wsrelay import ws_relay

__all__ = ["main"]

DEFAULT_LISTEN = "127.0.0.1:8443"
CONNECT_HANDSHAKE_TIMEOUT = 30.0
# Descriptors one connection holds: the client's socket, and what the backend takes (a
# socket; our stdin/stdout dup'd; a child's two pipes and its pidfd).
FDS_PER_CONNECTION = {"echo": 1, "tcp": 2, "unix": 2, "stdio": 3, "exec": 4}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsattach",
        description="TLS tunnels on trio_tlsattach's protocol stacks. With no command: "
        "`serve` on a self-signed localhost certificate with an echo backend.",
        epilog="endpoints: tcp:HOST:PORT, unix:PATH, exec:COMMAND, - (stdin/stdout), echo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", metavar="{serve,connect,socks5}")

    serve = sub.add_parser("serve", help="terminate TLS and forward to a backend")
    serve.add_argument(
        "--listen", type=listen_address, default=DEFAULT_LISTEN,
        help=f"HOST:PORT, unix:PATH, or - for one connection on stdin/stdout (inetd style) "
        f"(default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )  # fmt: skip
    serve.add_argument("--cert", help="certificate chain (PEM), or a file with cert and key")
    serve.add_argument("--key", help="private key (PEM)")
    serve.add_argument(
        "--self-signed", action="store_true", help="make a localhost certificate (the default)"
    )
    serve.add_argument(
        "--backend", type=endpoint_arg, default=Endpoint("echo"), help="endpoint (default: echo)"
    )
    serve.add_argument("--alpn", nargs="+", metavar="PROTO", help="ALPN protocols to accept")
    serve.add_argument(
        "--ws", action="store_true",
        help="speak WebSocket inside TLS (wss://): echo each message, or relay its bytes to "
        "the backend and the backend's bytes back as binary messages (websockify's job)",
    )  # fmt: skip
    add_limit_options(
        serve,
        handshake="a client gets this long to finish its handshake",
        connect="a backend gets this long to accept a connection",
        connections="bound live connections (a state block pool); the excess is refused; "
        "shrunk, with a warning, when the descriptor limit cannot fit N",
    )
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="processes sharing the port (SO_REUSEPORT)",
    )  # fmt: skip
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    connect = sub.add_parser("connect", help="originate TLS to a server")
    connect.add_argument(
        "endpoint",
        type=endpoint_arg,
        help="the TLS server: tcp:HOST:PORT, unix:PATH or exec:COMMAND",
    )
    connect.add_argument("--ca", help="CA file to trust (default: the system's)")
    connect.add_argument("--servername", help="hostname to verify and send as SNI")
    connect.add_argument("--insecure", action="store_true", help="do not verify the server")
    connect.add_argument("--alpn", nargs="+", metavar="PROTO", help="ALPN protocols to offer")
    connect.add_argument(
        "--listen", type=listen_address,
        help="accept plaintext here (HOST:PORT or unix:PATH) and forward each connection",
    )  # fmt: skip
    add_socks5_parser(sub)
    return parser


# --- helpers -------------------------------------------------------------------------------


def _connection_line(tls: TLSStream, peer: str, started: float, counts: list[int], how: str) -> str:
    cipher = tls.cipher()
    return (
        f"{peer} {tls.version() or '-'} {cipher[0] if cipher else '-'} alpn={tls.alpn or '-'} "
        f"in={counts[0]} out={counts[1]} {time.monotonic() - started:.3f}s {how}"
    )


def _opener(args: argparse.Namespace) -> Callable[[], Awaitable[Any]] | None:
    """How ``serve`` opens a connection's backend (None: the built-in echo)."""
    backend: Endpoint = args.backend
    if backend.kind == "echo":
        return None
    return lambda: open_endpoint(backend, after(args.connect_timeout))


async def _tunnel(
    tls: TLSStream,
    open_far: Callable[[], Awaitable[Any]] | None,
    idle: float | None = None,
    ws: bool = False,
) -> None:
    """Pump one TLS connection to its other side (echo when ``open_far`` is None); log it.

    With ``ws``, WebSocket runs inside the TLS stream first (``serve --ws``); the counts are
    then message bytes.
    """
    started, peer = time.monotonic(), peer_of(tls)
    counts = [0, 0]  # in = from the TLS peer, out = to the TLS peer
    how = "shutdown"  # what we report if we are cancelled
    try:
        if ws:
            await ws_relay(tls, open_far, counts, idle_timeout=idle)
        elif open_far is None:
            await echo(tls, counts, idle)
        else:
            async with wrap_stream(await open_far()) as far:
                await pump(tls, far, counts, idle)  # type: ignore[arg-type]
        how = "clean"
    except STREAM_ERRORS as exc:
        how = failure(exc)
    finally:
        log.info("%s", _connection_line(tls, peer, started, counts, how))
    if how != "clean":  # not a close_notify: the client must not take a cut stream as whole
        await reset(tls)


# --- serve ---------------------------------------------------------------------------------


def _print_banner(bound: str, backend: Endpoint, ca_path: str | None, ws: bool) -> None:
    print(
        f"listening on {bound} ({'TLS + WebSocket' if ws else 'TLS'}, {backend} backend)",
        flush=True,
    )
    if ca_path is None:
        return
    print(f"CA certificate: {ca_path} (removed on exit)", flush=True)
    if ws and not bound.startswith("unix:"):
        port = bound.rpartition(":")[2]
        print(
            f"try:  SSL_CERT_FILE={ca_path} python -m websockets wss://localhost:{port}/",
            flush=True,
        )
        return
    if bound.startswith("unix:"):
        print(f"try:  tlsattach connect {bound} --servername localhost --ca {ca_path}", flush=True)
        return
    print(
        f"try:  openssl s_client -connect {bound} -servername localhost -CAfile {ca_path}\n"
        f"  or: tlsattach connect tcp:{bound} --servername localhost --ca {ca_path}",
        flush=True,
    )


async def _serve(args: argparse.Namespace, workdir: str) -> int:
    ca_path = None
    if not args.cert:
        args.cert, ca_path = self_signed(workdir)
    layer = TLSServerLayer(args.cert, args.key, alpn=args.alpn)
    backend: Endpoint = args.backend
    open_far, idle = _opener(args), args.idle_timeout or None
    if args.listen == "-":
        return await _serve_stdio(layer, open_far, args.handshake_timeout, idle, args.ws)
    pool = None
    if args.max_connections:
        pool = StateBlockPool(
            fit_connections(args.max_connections, FDS_PER_CONNECTION[backend.kind])
        )
    workers = args.workers > 1 and not args.listen.startswith("unix:")
    raw, bound = await open_listener(args.listen, reuse_port=workers or args.reuse_port)
    listener = TLSListener(raw, layer, handshake_deadline=args.handshake_timeout, pool=pool)

    async def serve() -> None:
        # Printed once SIGTERM is handled: whoever reads it may stop us cleanly at once.
        _print_banner(bound, backend, ca_path, args.ws)
        await listener.serve(lambda tls: _tunnel(tls, open_far, idle, args.ws))

    with unix_path_removed(bound):
        children = await _start_workers(args, bound) if workers else []
        try:
            await until_signal(serve)
        finally:
            with trio.CancelScope(shield=True):
                for child in children:
                    child.terminate()
                    with trio.move_on_after(10):
                        await child.wait()
                    if child.returncode is None:
                        child.kill()
                        await child.wait()
    return 0


async def _serve_stdio(
    layer: TLSServerLayer,
    open_far: Callable[[], Awaitable[Any]] | None,
    handshake_timeout: float,
    idle: float | None,
    ws: bool,
) -> int:
    """One TLS connection on stdin/stdout, as inetd, systemd (Accept=yes) or socat hand it over.

    Nothing but TLS may reach stdout, so there is no banner; the log line goes to stderr.
    """
    with stdio_blocking_restored():
        raw = open_pipe(os.dup(0), os.dup(1))
        try:
            tls = await layer.attach(raw, after(handshake_timeout))
        except STREAM_ERRORS as exc:
            log.warning("- handshake failed: %s", failure(exc))
            return 1
        async with tls:
            await until_signal(lambda: _tunnel(tls, open_far, idle, ws))
    return 0


async def _start_workers(args: argparse.Namespace, bound: str) -> list[trio.Process]:
    """``--workers N``: N-1 more processes serving the same port (the kernel spreads accepts)."""
    command = [sys.executable, "-m", "trio_tlsattach"]
    if args.verbose or args.quiet:
        command.append("--verbose" if args.verbose else "--quiet")
    command += ["serve", "--listen", bound, "--reuse-port", "--cert", args.cert,
                "--backend", str(args.backend),
                "--handshake-timeout", str(args.handshake_timeout),
                "--connect-timeout", str(args.connect_timeout),
                "--idle-timeout", str(args.idle_timeout)]  # fmt: skip
    if args.key:
        command += ["--key", args.key]
    if args.alpn:
        command += ["--alpn", *args.alpn]
    if args.ws:
        command.append("--ws")
    if args.max_connections:
        command += ["--max-connections", str(args.max_connections)]
    log.info("starting %d more worker processes on %s", args.workers - 1, bound)
    return [
        await trio.lowlevel.open_process(command, stdout=subprocess.DEVNULL)
        for _ in range(args.workers - 1)
    ]


# --- connect -------------------------------------------------------------------------------


def _client_layer(args: argparse.Namespace) -> TLSClientLayer:
    endpoint: Endpoint = args.endpoint
    context = ssl.create_default_context(cafile=args.ca)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    hostname = args.servername or (endpoint.host if endpoint.kind == "tcp" else None)
    if hostname is None and context.check_hostname:
        raise SystemExit(f"tlsattach: {endpoint.kind}: endpoints need --servername (or --insecure)")
    return TLSClientLayer(context, server_hostname=hostname, alpn=args.alpn)


async def _connect(args: argparse.Namespace) -> int:
    endpoint: Endpoint = args.endpoint
    if endpoint.kind not in ("tcp", "unix", "exec"):
        print("tlsattach: connect needs a tcp:, unix: or exec: endpoint", file=sys.stderr)
        return 2
    layer = _client_layer(args)

    async def one(local: Any) -> bool:
        """Forward one plaintext stream over a new TLS connection; True when it ended clean."""
        near = wrap_stream(local)
        try:
            far = await open_endpoint(endpoint)
            tls = await layer.attach(far, after(CONNECT_HANDSHAKE_TIMEOUT))
        except STREAM_ERRORS as exc:
            await near.aclose()
            log.warning("%s: %s", endpoint, exc)
            return False
        started, peer, counts, how = time.monotonic(), peer_of(tls), [0, 0], "shutdown"
        async with tls, near:
            try:
                await pump(tls, near, counts)  # type: ignore[arg-type]
                how = "clean"
            except STREAM_ERRORS as exc:
                how = failure(exc)
            finally:
                log.info("%s", _connection_line(tls, peer, started, counts, how))
        return how == "clean"

    if args.listen is None:
        with stdio_blocking_restored():
            clean = await one(open_pipe(os.dup(0), os.dup(1)))
        return 0 if clean else 1

    raw, bound = await open_listener(args.listen)
    with unix_path_removed(bound):
        print(f"listening on {bound} (plaintext, forwarding over TLS to {endpoint})", flush=True)

        async def handler(local: Any) -> None:
            await one(local)

        async def serve() -> None:
            await trio.serve_listeners(handler, [raw])

        await until_signal(serve)
    return 0


# --- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tlsattach`` command; returns the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:  # `tlsattach` alone, or with only -v/-q: serve the default
        args = parser.parse_args([*argv, "serve"])
    if args.command == "serve":
        if args.self_signed and args.cert:
            parser.error("--self-signed and --cert exclude each other")
        if args.key and not args.cert:
            parser.error("--key needs --cert")
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        check_limit_options(parser, args)
        if args.listen == "-" and args.backend.kind == "stdio":
            parser.error("--listen - and --backend - would both be stdin/stdout")
        if args.listen == "-" and args.workers > 1:
            parser.error("--listen - serves one connection: no --workers")
    if args.command == "socks5":
        check_socks5_arguments(parser, args)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s tlsattach: %(message)s", stream=sys.stderr, force=True
    )
    try:
        if args.command == "connect":
            return trio.run(_connect, args)
        workdir = tempfile.mkdtemp(prefix="tlsattach-")  # a self-made certificate goes here
        try:
            return trio.run(_serve if args.command == "serve" else run_socks5, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    except (StackError, OSError) as exc:
        print(f"tlsattach: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130
