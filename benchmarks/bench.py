"""Benchmarks: our TLSStream against trio.SSLStream (and asyncio, uvloop) in the same run.

Run ``python benchmarks/bench.py --quick`` (under a minute) or ``nox -s bench`` (full).
Machines are shared and noisy, so every measure runs the contenders interleaved
(A, B, A, B, ... for ``--rounds``) and reports medians and their ratio; never compare figures
across runs, only ratios within one.

Measures (``--only`` takes a comma-separated subset):
  bulk      one-way throughput, sender and receiver in one process, TCP and Unix, 16K/64K/1M,
            and the C floor: the same bytes through OpenSSL and the socket with no event loop
  bulk2p    one-way throughput, sender in a spawned child process, TCP and Unix, 16K/64K/1M,
            and the CPU each end spends per MB
  handshake sequential full handshakes on new TCP connections: per second, CPU us per handshake
  hsserver  server side only: tls_attach_server_mem with file paths vs trio.SSLStream, the
            client (trio.SSLStream, new TCP connection, 1 byte, aclose) in a child process
  idle      RSS and Python memory per idle TLS 1.3 server connection (fresh child each)
  alloc     Python allocator calls per MB received (a counting allocator hook, see README)

Every contender runs TLS 1.3 with TLS_AES_128_GCM_SHA256 (pinned; the cipher table printed
first shows what each one negotiated). Results print as a table and, with ``--json PATH``,
append as JSON lines. The exit status is always 0: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import ssl
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _allocs import allocation_counter
from _contenders import (
    LIMIT,
    TRIO_CONTENDERS,
    Address,
    CpuClock,
    HandshakeClients,
    Sender,
    asyncio_bulk,
    asyncio_cipher,
    asyncio_handshakes,
    asyncio_names,
    asyncio_receive_from_child,
    contexts,
    run_asyncio,
    serve_handshake,
    trio_connect,
)
from _floor import FLOORS, floor_seconds
from _idle import idle_per_connection

import trio_tlsattach as ta

MB = 1_000_000
KiB = 1024
Row = dict[str, Any]
NAN = float("nan")


# --- plumbing -----------------------------------------------------------------------------------


def _unix_path() -> str:
    return os.path.join(tempfile.mkdtemp(prefix="tlsattach-bench-"), "s")


async def _listen(unix_path: str | None) -> tuple[trio.abc.Listener[Any], Address]:
    if unix_path:
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(unix_path)
        sock.listen()
        return trio.SocketListener(sock), unix_path
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    return listener, ("127.0.0.1", listener.socket.getsockname()[1])


async def _both(client: Callable[[], Awaitable[Any]], server: Callable[[], Awaitable[Any]]) -> Any:
    """Run a client and a server coroutine concurrently; (client result, server result)."""
    out: dict[str, Any] = {}

    async def run(key: str, fn: Callable[[], Awaitable[Any]]) -> None:
        out[key] = await fn()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "c", client)
        nursery.start_soon(run, "s", server)
    return out["c"], out["s"]


async def _tls_pair(contender: Any, unix_path: str | None = None) -> tuple[Any, Any]:
    listener, address = await _listen(unix_path)
    c, s = await _both(lambda: trio_connect(address), listener.accept)
    await listener.aclose()
    client, server = await _both(lambda: contender.client(c), lambda: contender.server(s))
    return client, server


def _interleave(
    rounds: int, names: list[str], measure: Callable[[str], Any]
) -> dict[str, list[Any]]:
    """``measure(name)`` for every name, round after round; a failure counts as NaN."""
    results: dict[str, list[Any]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            # Each measure starts from a collected heap: otherwise the next one in line pays
            # for the garbage of the one before (seen: the first contender of a round, after
            # asyncio and uvloop, lost a quarter of its handshakes per second).
            gc.collect()
            try:
                results[name].append(measure(name))
            except Exception as exc:
                print(f"  {name}: failed: {exc!r}", file=sys.stderr)
                results[name].append(NAN)
    return results


def _median(values: list[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else NAN


def _medians(results: dict[str, list[float]]) -> dict[str, float]:
    return {name: _median(values) for name, values in results.items()}


def _names(args: argparse.Namespace, names: list[str]) -> list[str]:
    """The contenders of a measure, less those ``--contenders`` leaves out."""
    if not args.contenders:
        return names
    keep = set(args.contenders.split(","))
    return [n for n in names if n in keep]


# --- cipher check -------------------------------------------------------------------------------


async def _trio_cipher(name: str) -> str:
    client, server = await _tls_pair(TRIO_CONTENDERS[name]())
    cipher, version, _ = server.cipher()
    await client.aclose()
    await server.aclose()
    return f"{version} {cipher}"


def cipher_table() -> dict[str, str]:
    """What each contender negotiates, from one connection each."""
    table = {}
    for name in ("ours", "trio", *asyncio_names()):
        try:
            if name in TRIO_CONTENDERS:
                table[name] = trio.run(_trio_cipher, name)
            else:
                table[name] = run_asyncio(name, asyncio_cipher())
        except Exception as exc:
            table[name] = f"failed: {exc!r}"
    return table


# --- bulk, one process --------------------------------------------------------------------------


async def _bulk_once(
    contender: Any, total: int, size: int, unix: bool, reverse: bool = False
) -> float:
    """Seconds to move ``total`` bytes client -> server (``reverse``: server -> client)."""
    client, server = await _tls_pair(contender, _unix_path() if unix else None)
    sender, receiver = (server, client) if reverse else (client, server)
    data = b"x" * size
    start = time.perf_counter()
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for _ in range(total // size):
                    await sender.send_all(data)

            nursery.start_soon(send)
            await contender.drain(receiver, total // size * size, size)
    elapsed = time.perf_counter() - start
    await client.aclose()
    await server.aclose()
    return elapsed


def bench_bulk(args: argparse.Namespace) -> list[Row]:
    rows = []
    total = 32 * MB if args.quick else 256 * MB
    sizes = _sizes(args)
    names = _names(args, ["ours", "ours-some", "trio", *asyncio_names()])
    # Server -> client: the trio contenders that read with receive_some (asyncio's sender
    # and receiver are not swapped here).
    names_back = _names(args, ["ours-some", "trio"])
    for unix in _transports(args):
        for size in sizes:

            def measure(
                name: str, size: int = size, unix: bool = unix, reverse: bool = False
            ) -> float:
                total_sent = total // size * size
                if name in TRIO_CONTENDERS:
                    contender = TRIO_CONTENDERS[name]()
                    seconds = trio.run(_bulk_once, contender, total, size, unix, reverse)
                else:
                    path = _unix_path() if unix else None
                    seconds = run_asyncio(name, asyncio_bulk(total, size, path))
                return total_sent / seconds / MB

            samples = _interleave(args.rounds, names, measure)
            medians = _medians(samples)
            label = f"bulk 1 process {'unix' if unix else 'tcp'} {size // KiB} KiB"
            rows.append(_row(f"{label} (receive_into)", medians, "MB/s", 1.6, samples=samples))
            some = {**medians, "ours": medians.get("ours-some", NAN)}
            some_samples = {**samples, "ours": samples.get("ours-some", [])}
            rows.append(_row(f"{label} (receive_some)", some, "MB/s", 1.8, samples=some_samples))
            # The C floor (see _floor): what a stack with no Python or scheduler cost at all
            # would reach, against the same run's trio.SSLStream.
            floors = _medians(_interleave(args.rounds, _names(args, list(FLOORS)),
                                          functools.partial(_floor_rate, size=size, unix=unix,
                                                            total=total)))  # fmt: skip
            for floor, how in (("floor-bio", "MemoryBIO"), ("floor-sslsocket", "SSLSocket")):
                if floor in floors:
                    rows.append(_row(f"  C floor, no event loop, {how} (info)",
                                     {**medians, "ours": floors[floor]}, "MB/s", None))  # fmt: skip
            back = _interleave(args.rounds, names_back, functools.partial(measure, reverse=True))
            back_medians = _medians(back)
            back_medians["ours"] = back_medians.get("ours-some", NAN)
            back_samples = {**back, "ours": back.get("ours-some", [])}
            rows.append(_row(f"{label} server->client (receive_some)", back_medians, "MB/s",
                             1.8, samples=back_samples))  # fmt: skip
    return rows


def _floor_rate(name: str, *, size: int, unix: bool, total: int) -> float:
    return total // size * size / floor_seconds(name, unix, size, total) / MB


def _sizes(args: argparse.Namespace) -> list[int]:
    """The write and read sizes of the bulk measures: ``--sizes``, else by ``--quick``."""
    if args.sizes:
        return [int(k) * KiB for k in args.sizes.split(",")]
    return [64 * KiB] if args.quick else [16 * KiB, 64 * KiB, 1024 * KiB]


def _transports(args: argparse.Namespace) -> list[bool]:
    """The bulk measures' transports, as ``unix`` flags: ``--transports tcp,unix``."""
    return [name.strip() == "unix" for name in args.transports.split(",")]


# --- bulk, sender in a child process -------------------------------------------------------------


async def _receive_from_child(
    name: str, total: int, size: int, unix: bool, counter: Any = None
) -> tuple[float, float]:
    contender = TRIO_CONTENDERS[name]()
    listener, address = await _listen(_unix_path() if unix else None)
    child = Sender(name, address, total, size)
    try:
        with trio.fail_after(LIMIT):
            tls = await contender.server(await listener.accept())
            start = time.perf_counter()
            if counter is None:
                await contender.drain(tls, total // size * size, size)
            else:
                with counter:
                    await contender.drain(tls, total // size * size, size)
            elapsed = time.perf_counter() - start
        await tls.aclose()
    finally:
        await listener.aclose()
        await trio.to_thread.run_sync(child.join, 30)
    return elapsed, child.cpu_seconds()


def _receive_2p(
    name: str, total: int, size: int, unix: bool, counter: Any = None
) -> tuple[float, float]:
    """Seconds to receive ``total`` bytes from a sender child, for any contender, and the CPU
    seconds the child spent sending them."""
    if name in TRIO_CONTENDERS:
        return trio.run(_receive_from_child, name, total, size, unix, counter)
    path = _unix_path() if unix else None
    return run_asyncio(name, asyncio_receive_from_child(name, total, size, path, counter))  # type: ignore[no-any-return]


def bench_bulk2p(args: argparse.Namespace) -> list[Row]:
    """Throughput, and what each end costs: with both processes busy, the slower end sets the
    pace, so the CPU rows show which end limits a contender (benchmarks/README)."""
    rows = []
    total = 64 * MB if args.quick else 256 * MB
    sizes = _sizes(args)
    names = _names(args, ["ours", "ours-some", "trio", *asyncio_names()])
    for unix in _transports(args):
        for size in sizes:

            def measure(name: str, size: int = size, unix: bool = unix) -> tuple[float, ...]:
                moved = total // size * size / MB
                receiving = CpuClock()
                seconds, sending = _receive_2p(name, total, size, unix, receiving)
                return moved / seconds, receiving.seconds * 1e6 / moved, sending * 1e6 / moved

            samples = _interleave(args.rounds, names, measure)
            label = f"bulk sender in 2nd process {'unix' if unix else 'tcp'} {size // KiB} KiB"
            for i, (what, unit, target) in enumerate([
                (label, "MB/s", 2.0),
                ("  CPU us per MB, receiving end (info)", "us", None),
                ("  CPU us per MB, sending end (info)", "us", None),
            ]):  # fmt: skip
                part = {k: [v[i] if isinstance(v, tuple) else NAN for v in vs]
                        for k, vs in samples.items()}  # fmt: skip
                rows.append(_row(what, _medians(part), unit, target, lower_is_better=i > 0,
                                 samples=part))  # fmt: skip
                if i == 0 and "ours-some" in part:
                    some = {**part, "ours": part["ours-some"]}
                    rows.append(_row(f"{label} (receive_some)", _medians(some), unit, target,
                                     samples=some))  # fmt: skip
    return rows


# --- handshakes ----------------------------------------------------------------------------------


async def _handshakes(contender: Any, seconds: float) -> tuple[float, float]:
    listener, address = await _listen(None)
    count = 0
    cpu, start = time.process_time(), time.perf_counter()
    while time.perf_counter() - start < seconds:

        async def serve() -> Any:
            return await contender.server(await listener.accept())

        async def connect() -> Any:
            return await contender.client(await contender.connect(address))

        client, server = await _both(connect, serve)
        await client.aclose()
        await server.aclose()
        count += 1
    cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
    await listener.aclose()
    return count / elapsed, cpu / count * 1e6


def bench_handshake(args: argparse.Namespace) -> list[Row]:
    seconds = 2.0 if args.quick else 5.0
    names = _names(
        args, ["ours-stack", "trio", "ours", "ours-resume", "ours-stack-full", *asyncio_names()]
    )

    def measure(name: str) -> tuple[float, float]:
        if name in TRIO_CONTENDERS:
            return trio.run(_handshakes, TRIO_CONTENDERS[name](), seconds)
        return run_asyncio(name, asyncio_handshakes(seconds))  # type: ignore[no-any-return]

    results = _interleave(args.rounds, names, measure)
    rate = {k: _median([v[0] if isinstance(v, tuple) else NAN for v in vs])
            for k, vs in results.items()}  # fmt: skip
    cpu = {k: _median([v[1] if isinstance(v, tuple) else NAN for v in vs])
           for k, vs in results.items()}  # fmt: skip

    def as_ours(variant: str, values: dict[str, float]) -> dict[str, float]:
        return {**values, "ours": values.get(variant, NAN)}

    samples: dict[str, list[Any]] = {
        k: [v[0] if isinstance(v, tuple) else NAN for v in vs] for k, vs in results.items()
    }
    stack_samples = {**samples, "ours": samples.get("ours-stack", [])}
    return [
        _row("handshakes/s, each stack as shipped (ours: open_tcp, session cache on)",
             as_ours("ours-stack", rate), "/s", 1.4, samples=stack_samples),
        _row("CPU us per handshake, both ends (as shipped)", as_ours("ours-stack", cpu), "us",
             None, lower_is_better=True),
        _row("handshakes/s, full TLS handshake, ours open_tcp (info)",
             as_ours("ours-stack-full", rate), "/s", None),
        _row("handshakes/s, full TLS handshake, same connect code (info)", rate, "/s", None),
        _row("CPU us per handshake, both ends (full, same connect)", cpu, "us", None,
             lower_is_better=True),
        _row("handshakes/s, ours resumes, same connect code (info)",
             as_ours("ours-resume", rate), "/s", None),
    ]  # fmt: skip


# --- server-side handshakes, the client in a child process -------------------------------------


async def _serve_handshakes(name: str, count: int) -> tuple[float, float]:
    """(handshakes per second, server CPU us per handshake) for ``count`` connections from a
    trio.SSLStream client in a child; each: handshake, receive 1 byte, close. The first
    connection (the child starting, the context cache filling) is not timed."""
    listener, address = await _listen(None)
    clients = HandshakeClients(address, count + 1)
    try:
        with trio.fail_after(LIMIT):
            for i in range(count + 1):
                if i == 1:
                    cpu, start = time.process_time(), time.perf_counter()
                tls = await serve_handshake(name, await listener.accept())
                with contextlib.suppress(trio.BrokenResourceError):
                    await tls.receive_some(1)
                await tls.aclose()
            cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
    finally:
        await listener.aclose()
        await trio.to_thread.run_sync(clients.join, 30)
    return count / elapsed, cpu / count * 1e6


async def _serve_alternating(names: list[str], count: int) -> dict[str, float]:
    """Server CPU us per handshake, median over connections, with the contenders taking turns
    connection by connection in one server process (the same client child for all): what
    other processes on a shared machine do to the CPU clock hits every contender alike."""
    listener, address = await _listen(None)
    clients = HandshakeClients(address, (count + 1) * len(names))
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        with trio.fail_after(LIMIT):
            for i in range(count + 1):
                for name in names:
                    start = time.thread_time()
                    tls = await serve_handshake(name, await listener.accept())
                    with contextlib.suppress(trio.BrokenResourceError):
                        await tls.receive_some(1)
                    await tls.aclose()
                    if i:  # the first turn (the child starting, the cache filling) is not kept
                        cpu[name].append((time.thread_time() - start) * 1e6)
    finally:
        await listener.aclose()
        await trio.to_thread.run_sync(clients.join, 30)
    return {name: statistics.median(values) for name, values in cpu.items()}


def bench_hsserver(args: argparse.Namespace) -> list[Row]:
    count = 300 if args.quick else 1000
    names = _names(args, ["ours", "trio"])
    results = _interleave(args.rounds, names, lambda name: trio.run(_serve_handshakes, name, count))
    rate = {k: [v[0] if isinstance(v, tuple) else NAN for v in vs] for k, vs in results.items()}
    cpu = {k: [v[1] if isinstance(v, tuple) else NAN for v in vs] for k, vs in results.items()}
    turns = trio.run(_serve_alternating, names, count)
    return [
        _row("server handshakes/s, tls_attach_server_mem(file paths), trio client in 2nd process",
             _medians(rate), "/s", 1.2, samples=rate),
        _row("  server CPU us per handshake", _medians(cpu), "us", 1.2, lower_is_better=True,
             samples=cpu),
        _row("  the same, contenders taking turns per connection in one server (info)", turns,
             "us", None, lower_is_better=True),
    ]  # fmt: skip


# --- idle memory ---------------------------------------------------------------------------------


def bench_idle(args: argparse.Namespace) -> list[Row]:
    count = 500 if args.quick else 2000
    rss: dict[str, float] = {}
    py: dict[str, float] = {}
    for name in _names(args, ["ours", "trio"]):
        try:
            rss[name], py[name] = idle_per_connection(name, count)
        except Exception as exc:
            print(f"  idle {name}: failed: {exc!r}", file=sys.stderr)
            rss[name] = py[name] = NAN
    note = f"N={count}, server side only"
    return [
        _row(f"idle RSS bytes per server conn ({note})", rss, "B", 1.0, lower_is_better=True),
        _row("idle Python heap bytes per server conn", py, "B", None, lower_is_better=True),
    ]


# --- allocations ---------------------------------------------------------------------------------


def bench_alloc(args: argparse.Namespace) -> list[Row]:
    try:
        allocation_counter()
    except RuntimeError as exc:
        print(f"alloc: skipped ({exc})", file=sys.stderr)
        return []
    total = 16 * MB if args.quick else 64 * MB
    rows = []
    for size in (64 * KiB, 1024 * KiB):
        names = _names(args, ["ours", "ours-some", "trio", *asyncio_names()])

        def measure(name: str, size: int = size) -> float:
            # The sender is a child process: every allocation counted is the receiver's.
            counter = allocation_counter()
            _receive_2p(name, total, size, False, counter)
            return counter.count / (total // size * size / MB)

        rounds = 1 if args.quick else args.rounds  # counts vary little from run to run
        samples = _interleave(rounds, names, measure)
        medians = _medians(samples)
        label = f"allocations per MB received ({size // KiB} KiB reads"
        rows.append(
            _row(f"{label}, receive_into)", medians, "/MB", 600, lower_is_better=True,
                 samples=samples)
        )  # fmt: skip
        some = {**medians, "ours": medians.get("ours-some", NAN)}
        rows.append(_row(f"{label}, receive_some)", some, "/MB", 600, lower_is_better=True))
    return rows


# --- report --------------------------------------------------------------------------------------


def _row(
    measure: str,
    values: dict[str, float],
    unit: str,
    target: float | None,
    *,
    lower_is_better: bool = False,
    info: bool = False,
    samples: dict[str, list[Any]] | None = None,
) -> Row:
    """A table row. ``target``: a ratio over trio.SSLStream, except for "/MB" (an absolute
    ceiling); idle memory's target 1.0 means "no worse than trio.SSLStream"."""
    ours, trio_value = values.get("ours", NAN), values.get("trio", NAN)
    if ours and trio_value and not math.isnan(ours) and not math.isnan(trio_value):
        ratio = trio_value / ours if lower_is_better else ours / trio_value
    else:
        ratio = NAN
    row: Row = {"measure": measure, "unit": unit, "ratio": round(ratio, 3)}
    for name in ("ours", "trio", "asyncio", "uvloop"):
        row[name] = round(values.get(name, NAN), 1)
    if target is not None:
        if unit == "/MB":
            row["target"], row["pass"] = f"<= {target}", ours <= target
        elif lower_is_better:
            row["target"] = "<= trio" if target == 1.0 else f">= {target}x"
            row["pass"] = ratio >= target
        else:
            row["target"], row["pass"] = f">= {target}x", ratio >= target
        if info:
            row["target"] += " (info)"
        if math.isnan(ratio if unit != "/MB" else ours):
            row["pass"] = None
    if samples is not None:  # every round's figure, for judging the noise (JSON only)
        row["samples"] = {k: [round(v, 1) for v in vs] for k, vs in samples.items()}
    return row


def _fmt(value: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.0f}"


def _print(rows: list[Row], ciphers: dict[str, str]) -> None:
    print("\nnegotiated (one connection each, server side):")
    for name, cipher in ciphers.items():
        print(f"  {name:10} {cipher}")
    header = (
        f"\n{'measure':56} {'ours':>7} {'trio.SSLStream':>14} {'ratio':>6} {'asyncio':>8}"
        f" {'uvloop':>7}  {'target':18} pass/fail"
    )
    print(header)
    print("-" * (len(header) - 1))
    for r in rows:
        verdict = {None: "n/a", True: "PASS", False: "FAIL"}[r["pass"]] if "pass" in r else ""
        ratio = "-" if math.isnan(r["ratio"]) else f"{r['ratio']:.2f}"
        print(
            f"{r['measure']:56} {_fmt(r['ours'], 7)} {_fmt(r['trio'], 14)} {ratio:>6}"
            f" {_fmt(r['asyncio'], 8)} {_fmt(r['uvloop'], 7)}  {r.get('target', ''):18} {verdict}"
        )


MEASURES = {
    "bulk": bench_bulk,
    "bulk2p": bench_bulk2p,
    "handshake": bench_handshake,
    "hsserver": bench_hsserver,
    "idle": bench_idle,
    "alloc": bench_alloc,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--only", default=",".join(MEASURES), help="comma-separated measures")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median)")
    parser.add_argument("--sizes", default="", help="bulk sizes in KiB, e.g. 64,1024")
    parser.add_argument("--transports", default="tcp,unix", help="bulk transports: tcp, unix")
    parser.add_argument("--json", help="append results as JSON lines to this file")
    parser.add_argument(
        "--contenders",
        default="",
        help="only these, e.g. ours (for profiling): ours, ours-some, ours-resume, trio, asyncio,"
        " uvloop; default all",
    )
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    started = time.perf_counter()
    _, _, pinned = contexts()
    ciphers = cipher_table()
    if not pinned:
        print(f"warning: cipher not pinned; see the negotiated table: {ciphers}", file=sys.stderr)
    rows: list[Row] = []
    for name in (n.strip() for n in args.only.split(",") if n.strip()):
        if name not in MEASURES:
            print(f"unknown measure {name!r}; choose from {', '.join(MEASURES)}", file=sys.stderr)
            continue
        print(f"[{time.perf_counter() - started:6.1f}s] {name}...", file=sys.stderr, flush=True)
        try:
            rows += MEASURES[name](args)
        except Exception:
            traceback.print_exc()
    _print(rows, ciphers)
    print(f"\n({time.perf_counter() - started:.0f} s, {args.rounds} rounds, median)")
    if args.json:
        stamp = {
            "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
            "openssl": ssl.OPENSSL_VERSION, "cpus": os.cpu_count(), "quick": args.quick,
            "rounds": args.rounds, "version": ta.__version__, "ciphers": ciphers,
        }  # fmt: skip
        with open(args.json, "a") as f:
            for row in rows:
                f.write(json.dumps({**stamp, **row}) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
    sys.exit(0)
