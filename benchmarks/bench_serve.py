"""Benchmark: ``tlsattach serve`` under 64 concurrent clients, against trio and stunnel, one run.

Run ``python benchmarks/bench_serve.py --quick`` (about 30 s) or without ``--quick`` (3 rounds
of 5 s per measure, about 3 minutes). Machines are shared and noisy, so the contenders run
interleaved (A, B, C, D, A, B, ...) for ``--rounds`` and the table gives medians and ratios
within this run; never compare figures across runs.

Contenders, each a server process started once with the same certificate (a trustme leaf):
  tlsattach          ``tlsattach serve --cert leaf.pem``: its built-in echo backend, defaults
  trio               ``trio.serve_ssl_over_tcp`` with an echo handler (a small script)
  tlsattach->plain   ``tlsattach serve --backend tcp:...``: forwarding to a plain echo server
  stunnel->plain     ``stunnel`` (config in a temp dir) forwarding to the same plain echo server,
                     with TCP_NODELAY on both sides as trio and tlsattach set it
The plain echo server is one trio process (plain TCP) shared by the two forwarding contenders,
so ``tlsattach->plain / stunnel->plain`` compares the tunnels alone; ``tlsattach / trio``
compares our stack with trio's SSLStream serving the same echo.

Measures (64 client tasks at once, in this process, trio.SSLStream clients; the client is the
same for every contender, so it only scales the figures):
  conn/s      each task loops: TCP connect, full handshake (no resumption), 1 byte echoed,
              close_notify, close. Completed connections per second.
  echo MB/s   each task holds one connection and streams 16 KiB writes while it reads the echo
              back; echoed megabytes (10^6) per second, all tasks together.
Under each, the server process's CPU time (user + system, all threads, from /proc) per
connection or per MB: on a shared machine it is steadier than the rates, and it shows whether
the server or the client was the bottleneck (a server below a core has room to spare). For
these rows lower is better, so a ratio under 1 favours the first of the pair.
Every server logs as it does by default, to /dev/null. The exit status is always 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import trio
import trustme

CLIENTS = 64
CHUNK = 16 * 1024
MB = 1_000_000
NAN = float("nan")

# One script, two servers: plain TCP echo, or trio.serve_ssl_over_tcp echo with a cert file.
ECHO_SERVER = textwrap.dedent(
    """
    import ssl, sys, trio

    async def echo(stream):
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def main(cert):
        if cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert)
            serve = trio.serve_ssl_over_tcp
            args = (echo, 0, ctx)
        else:
            serve = trio.serve_tcp
            args = (echo, 0)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(lambda **kw: serve(*args, host="127.0.0.1", **kw))
            tcp = listeners[0].transport_listener if cert else listeners[0]
            port = tcp.socket.getsockname()[1]
            print(f"listening on 127.0.0.1:{port}", flush=True)

    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)
    """
)


# --- servers --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until something accepts on ``port`` (stunnel prints nothing we can rely on)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after 20 s")


@contextmanager
def _server(command: list[str], port: int | None = None) -> Iterator[tuple[int, int]]:
    """Start a server; yield its port (read from a ``listening on HOST:PORT`` line, or given)
    and its pid."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if port is None:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if match is None:
                raise RuntimeError(f"no port in {line!r} from {command[:4]}")
            port = int(match.group(1))
        _wait_port(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stunnel_command(workdir: str, cert: str, port: int, backend: int) -> list[str]:
    stunnel = shutil.which("stunnel") or shutil.which("stunnel4")
    if stunnel is None:
        raise RuntimeError("stunnel is not installed")
    config = os.path.join(workdir, "stunnel.conf")
    with open(config, "w") as f:
        f.write(
            f"foreground = yes\npid =\n\n[echo]\naccept = 127.0.0.1:{port}\n"
            f"connect = 127.0.0.1:{backend}\ncert = {cert}\n"
            "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
        )
    return [stunnel, config]


def start_servers(
    stack: ExitStack, workdir: str, cert: str, names: list[str]
) -> dict[str, tuple[int, int]]:
    """Every contender's server, running until ``stack`` closes; (port, pid) by name."""
    cli = [sys.executable, "-m", "trio_tlsattach", "serve", "--listen", "127.0.0.1:0"]
    echo_script = [sys.executable, "-c", ECHO_SERVER]
    ports: dict[str, tuple[int, int]] = {}
    plain = stack.enter_context(_server(echo_script))[0] if any("plain" in n for n in names) else 0
    for name in names:
        if name == "tlsattach":
            ports[name] = stack.enter_context(_server([*cli, "--cert", cert]))
        elif name == "trio":
            ports[name] = stack.enter_context(_server([*echo_script, cert]))
        elif name == "tlsattach->plain":
            command = [*cli, "--cert", cert, "--backend", f"tcp:127.0.0.1:{plain}"]
            ports[name] = stack.enter_context(_server(command))
        elif name == "stunnel->plain":
            port = _free_port()
            command = _stunnel_command(workdir, cert, port, plain)
            ports[name] = stack.enter_context(_server(command, port))
    return ports


# --- clients --------------------------------------------------------------------------------------


async def _connect(port: int, ctx: ssl.SSLContext) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    await tls.do_handshake()
    return tls


async def connections_per_second(
    port: int, ctx: ssl.SSLContext, seconds: float
) -> tuple[float, float]:
    """(connections completed, seconds)."""
    done = 0

    async def client() -> None:
        nonlocal done
        while True:
            tls = await _connect(port, ctx)
            await tls.send_all(b"x")
            assert await tls.receive_some(1) == b"x"
            await tls.aclose()
            done += 1

    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(CLIENTS):
                nursery.start_soon(client)
    return done, time.perf_counter() - started


async def echo_throughput(port: int, ctx: ssl.SSLContext, seconds: float) -> tuple[float, float]:
    """(MB echoed, seconds): connections are made first, then timed while they stream."""
    streams = [await _connect(port, ctx) for _ in range(CLIENTS)]
    echoed = 0
    block = os.urandom(CHUNK)

    broken: list[BaseException] = []
    timed = trio.CancelScope()

    async def one(tls: trio.SSLStream[trio.SocketStream]) -> None:
        nonlocal echoed
        try:
            async with trio.open_nursery() as nursery:

                async def send() -> None:
                    while True:
                        await tls.send_all(block)

                nursery.start_soon(send)
                while data := await tls.receive_some(65536):
                    echoed += len(data)
        except* trio.BrokenResourceError as group:  # counted and shown, not fatal to the run
            # The end of the measure cancels each stream's sender mid-record, which breaks
            # a trio.SSLStream for its receiver too: only breaks before that count.
            if not timed.cancel_called:
                broken.extend(group.exceptions)

    started = time.perf_counter()
    timed.deadline = trio.current_time() + seconds
    with timed:
        async with trio.open_nursery() as nursery:
            for tls in streams:
                nursery.start_soon(one, tls)
    elapsed = time.perf_counter() - started
    for tls in streams:
        await trio.aclose_forcefully(tls)
    if broken:
        print(f"  {len(broken)} connections broke: {broken[0]!r}", file=sys.stderr)
    return echoed / MB, elapsed


async def negotiated(port: int, ctx: ssl.SSLContext) -> str:
    tls = await _connect(port, ctx)
    version, cipher = tls.version(), tls.cipher()
    await trio.aclose_forcefully(tls)
    return f"{version} {cipher[0] if cipher else '-'}"


# --- the run --------------------------------------------------------------------------------------

MEASURES: dict[str, tuple[Callable[..., Any], str]] = {
    "conn/s": (connections_per_second, "server CPU ms/conn"),
    "echo MB/s": (echo_throughput, "server CPU ms/MB"),
}
CONTENDERS = ["tlsattach", "trio", "tlsattach->plain", "stunnel->plain"]
RATIOS = [("tlsattach", "trio"), ("tlsattach->plain", "stunnel->plain")]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, servers: dict[str, tuple[int, int]], ctx: ssl.SSLContext) -> None:
    rows = [row for measure, (_, cpu_row) in MEASURES.items() for row in (measure, cpu_row)]
    samples: dict[tuple[str, str], list[float]] = {(r, n): [] for r in rows for n in servers}
    for name, (port, _) in servers.items():
        print(f"  {name:18} {trio.run(negotiated, port, ctx)}", file=sys.stderr)
    for round_ in range(args.rounds):
        for measure, (function, cpu_row) in MEASURES.items():
            for name, (port, pid) in servers.items():
                cpu = cpu_seconds(pid)
                try:
                    amount, elapsed = trio.run(function, port, ctx, args.seconds)
                except Exception as exc:
                    print(f"  {name} {measure}: failed: {exc!r}", file=sys.stderr)
                    amount, elapsed = NAN, 1.0
                samples[measure, name].append(amount / elapsed)
                samples[cpu_row, name].append((cpu_seconds(pid) - cpu) * 1000 / (amount or NAN))
                print(
                    f"  round {round_ + 1} {measure:9} {name:18} {amount / elapsed:8.1f}"
                    f"  ({samples[cpu_row, name][-1]:.2f} {cpu_row})",
                    file=sys.stderr,
                )

    def median(row: str, name: str) -> float:
        good = [v for v in samples.get((row, name), []) if v == v]
        return statistics.median(good) if good else NAN

    names = list(servers)
    print(f"\n{'measure':20}" + "".join(f"{n:>18}" for n in names) + "".join(
        f"{a + ' / ' + b:>36}" for a, b in RATIOS
    ))  # fmt: skip
    for row in rows:
        cells = "".join(f"{median(row, n):>18.2f}" for n in names)
        ratios = "".join(f"{median(row, a) / median(row, b):>36.2f}" for a, b in RATIOS)
        print(f"{row:20}{cells}{ratios}")
    print(
        f"\n({CLIENTS} clients at once, {args.rounds} rounds of {args.seconds:g} s, median; "
        f"{os.cpu_count()} CPUs; server CPU is the TLS process's only, not the plain backend's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s per measure")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="per measure and contender")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    names = [n for n in args.contenders.split(",") if n in CONTENDERS]
    with (
        tempfile.TemporaryDirectory(prefix="tlsattach-bench-serve-") as workdir,
        ExitStack() as stack,
    ):
        ca = trustme.CA()
        cert = os.path.join(workdir, "leaf.pem")
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        print("negotiated:", file=sys.stderr)
        run(args, start_servers(stack, workdir, cert, names), ctx)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
    sys.exit(0)
