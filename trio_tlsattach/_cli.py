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
Endpoint and address parsing, and the byte pump, are in ``_tunnel``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

from ._base import StackAttribute
from ._clicommon import self_signed
from ._deadline import after
from ._errors import StackError
from ._listener import TLSListener, fit_fd_limit
from ._mem import StateBlockPool
from ._tls import TLSStream
from ._tlslayer import TLSClientLayer, TLSServerLayer
from ._transports import open_pipe, wrap_stream
from ._tunnel import (
    STREAM_ERRORS,
    Endpoint,
    describe,
    echo,
    open_endpoint,
    parse_address,
    parse_endpoint,
    pump,
    reset,
)

__all__ = ["main"]

log = logging.getLogger("trio_tlsattach")

DEFAULT_LISTEN = "127.0.0.1:8443"
CONNECT_HANDSHAKE_TIMEOUT = 30.0
# Descriptors one connection holds: the client's socket, and what the backend takes (a
# socket; our stdin/stdout dup'd; a child's two pipes and its pidfd).
FDS_PER_CONNECTION = {"echo": 1, "tcp": 2, "unix": 2, "stdio": 3, "exec": 4}


def _endpoint(text: str) -> Endpoint:
    try:
        return parse_endpoint(text)
    except StackError as exc:
        raise argparse.ArgumentTypeError(exc.strerror) from None


def _listen_address(text: str) -> str:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsattach",
        description="TLS tunnels on trio_tlsattach's protocol stacks. With no command: "
        "`serve` on a self-signed localhost certificate with an echo backend.",
        epilog="endpoints: tcp:HOST:PORT, unix:PATH, exec:COMMAND, - (stdin/stdout), echo",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", metavar="{serve,connect}")

    serve = sub.add_parser("serve", help="terminate TLS and forward to a backend")
    serve.add_argument(
        "--listen", type=_listen_address, default=DEFAULT_LISTEN,
        help=f"HOST:PORT, unix:PATH, or - for one connection on stdin/stdout (inetd style) "
        f"(default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )  # fmt: skip
    serve.add_argument("--cert", help="certificate chain (PEM), or a file with cert and key")
    serve.add_argument("--key", help="private key (PEM)")
    serve.add_argument(
        "--self-signed", action="store_true", help="make a localhost certificate (the default)"
    )
    serve.add_argument(
        "--backend", type=_endpoint, default=Endpoint("echo"), help="endpoint (default: echo)"
    )
    serve.add_argument("--alpn", nargs="+", metavar="PROTO", help="ALPN protocols to accept")
    serve.add_argument(
        "--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
        help="a client gets this long to finish its handshake (default 10)",
    )  # fmt: skip
    serve.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="SECONDS",
        help="a backend gets this long to accept a connection (default 10)",
    )  # fmt: skip
    serve.add_argument(
        "--idle-timeout", type=float, default=600.0, metavar="SECONDS",
        help="end a connection when no byte moved either way for this long (default 600; "
        "0: never)",
    )  # fmt: skip
    serve.add_argument(
        "--max-connections", type=int, metavar="N",
        help="bound live connections (a state block pool); the excess is refused; "
        "shrunk, with a warning, when the descriptor limit cannot fit N",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="processes sharing the port (SO_REUSEPORT)",
    )  # fmt: skip
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    connect = sub.add_parser("connect", help="originate TLS to a server")
    connect.add_argument(
        "endpoint", type=_endpoint, help="the TLS server: tcp:HOST:PORT, unix:PATH or exec:COMMAND"
    )
    connect.add_argument("--ca", help="CA file to trust (default: the system's)")
    connect.add_argument("--servername", help="hostname to verify and send as SNI")
    connect.add_argument("--insecure", action="store_true", help="do not verify the server")
    connect.add_argument("--alpn", nargs="+", metavar="PROTO", help="ALPN protocols to offer")
    connect.add_argument(
        "--listen", type=_listen_address,
        help="accept plaintext here (HOST:PORT or unix:PATH) and forward each connection",
    )  # fmt: skip
    return parser


# --- helpers -------------------------------------------------------------------------------


async def _reuse_port_listener(host: str, port: int) -> trio.SocketListener:
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


async def _open_listener(address: str, reuse_port: bool = False) -> tuple[trio.SocketListener, str]:
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
        listener = await _reuse_port_listener(host, port)
    else:
        listener = (await trio.open_tcp_listeners(port, host=host))[0]
    return listener, describe(listener.socket.getsockname())


@contextlib.contextmanager
def _unix_path_removed(bound: str) -> Iterator[None]:
    """Remove the Unix socket file we created, on the way out."""
    try:
        yield
    finally:
        if bound.startswith("unix:"):
            with contextlib.suppress(OSError):
                os.unlink(bound[5:])


@contextlib.contextmanager
def _stdio_blocking_restored() -> Iterator[None]:
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


def _peer(tls: TLSStream) -> str:
    """The peer's address, read at the start (a socket the peer reset no longer knows it)."""
    try:
        return describe(tls.extra(StackAttribute.remote_address, None))
    except OSError:
        return "-"


def _connection_line(tls: TLSStream, peer: str, started: float, counts: list[int], how: str) -> str:
    cipher = tls.cipher()
    return (
        f"{peer} {tls.version() or '-'} {cipher[0] if cipher else '-'} alpn={tls.alpn or '-'} "
        f"in={counts[0]} out={counts[1]} {time.monotonic() - started:.3f}s {how}"
    )


def _failure(exc: BaseException) -> str:
    """How a connection ended, for its log line: the reason, without the errno prefix."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"error: {reason or type(exc).__name__}"


def _opener(args: argparse.Namespace) -> Callable[[], Awaitable[Any]] | None:
    """How ``serve`` opens a connection's backend (None: the built-in echo)."""
    backend: Endpoint = args.backend
    if backend.kind == "echo":
        return None
    return lambda: open_endpoint(backend, after(args.connect_timeout))


async def _tunnel(
    tls: TLSStream, open_far: Callable[[], Awaitable[Any]] | None, idle: float | None = None
) -> None:
    """Pump one TLS connection to its other side (echo when ``open_far`` is None); log it."""
    started, peer = time.monotonic(), _peer(tls)
    counts = [0, 0]  # in = from the TLS peer, out = to the TLS peer
    how = "shutdown"  # what we report if we are cancelled
    try:
        if open_far is None:
            await echo(tls, counts, idle)
        else:
            async with wrap_stream(await open_far()) as far:
                await pump(tls, far, counts, idle)  # type: ignore[arg-type]
        how = "clean"
    except STREAM_ERRORS as exc:
        how = _failure(exc)
    finally:
        log.info("%s", _connection_line(tls, peer, started, counts, how))
    if how != "clean":  # not a close_notify: the client must not take a cut stream as whole
        await reset(tls)


async def _until_signal(run: Callable[[], Awaitable[object]]) -> None:
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


# --- serve ---------------------------------------------------------------------------------


def _print_banner(bound: str, backend: Endpoint, ca_path: str | None) -> None:
    print(f"listening on {bound} (TLS, {backend} backend)", flush=True)
    if ca_path is None:
        return
    print(f"CA certificate: {ca_path} (removed on exit)", flush=True)
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
        return await _serve_stdio(layer, open_far, args.handshake_timeout, idle)
    pool = None
    if args.max_connections:
        pool = StateBlockPool(_fit_connections(args.max_connections, backend))
    workers = args.workers > 1 and not args.listen.startswith("unix:")
    raw, bound = await _open_listener(args.listen, reuse_port=workers or args.reuse_port)
    listener = TLSListener(raw, layer, handshake_deadline=args.handshake_timeout, pool=pool)

    async def serve() -> None:
        # Printed once SIGTERM is handled: whoever reads it may stop us cleanly at once.
        _print_banner(bound, backend, ca_path)
        await listener.serve(lambda tls: _tunnel(tls, open_far, idle))

    with _unix_path_removed(bound):
        children = await _start_workers(args, bound) if workers else []
        try:
            await _until_signal(serve)
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


def _fit_connections(wanted: int, backend: Endpoint) -> int:
    """``--max-connections``, shrunk (with a warning) to what the descriptor limit fits."""
    fits = fit_fd_limit(wanted, FDS_PER_CONNECTION[backend.kind])
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


async def _serve_stdio(
    layer: TLSServerLayer,
    open_far: Callable[[], Awaitable[Any]] | None,
    handshake_timeout: float,
    idle: float | None,
) -> int:
    """One TLS connection on stdin/stdout, as inetd, systemd (Accept=yes) or socat hand it over.

    Nothing but TLS may reach stdout, so there is no banner; the log line goes to stderr.
    """
    with _stdio_blocking_restored():
        raw = open_pipe(os.dup(0), os.dup(1))
        try:
            tls = await layer.attach(raw, after(handshake_timeout))
        except STREAM_ERRORS as exc:
            log.warning("- handshake failed: %s", _failure(exc))
            return 1
        async with tls:
            await _until_signal(lambda: _tunnel(tls, open_far, idle))
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
        started, peer, counts, how = time.monotonic(), _peer(tls), [0, 0], "shutdown"
        async with tls, near:
            try:
                await pump(tls, near, counts)  # type: ignore[arg-type]
                how = "clean"
            except STREAM_ERRORS as exc:
                how = _failure(exc)
            finally:
                log.info("%s", _connection_line(tls, peer, started, counts, how))
        return how == "clean"

    if args.listen is None:
        with _stdio_blocking_restored():
            clean = await one(open_pipe(os.dup(0), os.dup(1)))
        return 0 if clean else 1

    raw, bound = await _open_listener(args.listen)
    with _unix_path_removed(bound):
        print(f"listening on {bound} (plaintext, forwarding over TLS to {endpoint})", flush=True)

        async def handler(local: Any) -> None:
            await one(local)

        async def serve() -> None:
            await trio.serve_listeners(handler, [raw])

        await _until_signal(serve)
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
        if args.max_connections is not None and args.max_connections < 1:
            parser.error("--max-connections must be at least 1")
        for option in ("handshake_timeout", "connect_timeout"):
            if not getattr(args, option) > 0:
                parser.error(f"--{option.replace('_', '-')} must be a positive number of seconds")
        if not args.idle_timeout >= 0:
            parser.error("--idle-timeout must be 0 (never) or a positive number of seconds")
        if args.listen == "-" and args.backend.kind == "stdio":
            parser.error("--listen - and --backend - would both be stdin/stdout")
        if args.listen == "-" and args.workers > 1:
            parser.error("--listen - serves one connection: no --workers")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s tlsattach: %(message)s", stream=sys.stderr, force=True
    )
    try:
        if args.command == "serve":
            workdir = tempfile.mkdtemp(prefix="tlsattach-")
            try:
                return trio.run(_serve, args, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        return trio.run(_connect, args)
    except (StackError, OSError) as exc:
        print(f"tlsattach: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130
