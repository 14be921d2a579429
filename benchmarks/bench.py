"""Benchmarks: our TLSStream against trio.SSLStream (and asyncio, uvloop) in the same run.

Run ``python benchmarks/bench.py --quick`` (under a minute) or ``nox -s bench`` (full).
Machines are shared and noisy, so every measure runs the contenders interleaved
(A, B, A, B, ... for ``--rounds``) and reports medians and their ratio; never compare figures
across runs, only ratios within one.

Measures (``--only`` takes a comma-separated subset):
  bulk      one-way throughput, sender and receiver in one process, TCP and Unix, 16K/64K/1M
  bulk2p    one-way throughput with the sender in a child process (TCP, 64 KiB writes)
  handshake sequential handshakes on new TCP connections: per second, CPU us per handshake
  idle      RSS and Python memory per idle TLS 1.3 server connection (fresh child each)
  alloc     Python allocator calls per MB received (a counting allocator hook, see README)

Results print as a table and, with ``--json PATH``, append as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _allocs import allocation_counter
from _contenders import TRIO_CONTENDERS, Ours, OursFresh, Trio, asyncio_bulk

import trio_tlsattach as ta

MB = 1_000_000
Row = dict[str, Any]


# --- plumbing -----------------------------------------------------------------------------------


async def _connected_pair(unix_path: str | None) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    if unix_path:
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(unix_path)
        sock.listen()
        listener: trio.abc.Listener[Any] = trio.SocketListener(sock)
        client_stream: trio.abc.Stream = await trio.open_unix_socket(unix_path)
    else:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]  # type: ignore[attr-defined]
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    server_stream = await listener.accept()
    await listener.aclose()
    if unix_path:
        os.unlink(unix_path)
    return client_stream, server_stream


async def _tls_pair(contender: Any, unix_path: str | None = None) -> tuple[Any, Any]:
    c, s = await _connected_pair(unix_path)
    out: dict[str, Any] = {}

    async def run(key: str, coro: Callable[[], Awaitable[Any]]) -> None:
        out[key] = await coro()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "c", lambda: contender.client(c))
        nursery.start_soon(run, "s", lambda: contender.server(s))
    return out["c"], out["s"]


def _interleave(rounds: int, measure: Callable[[str], float], names: list[str]) -> dict[str, float]:
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            results[name].append(measure(name))
    return {name: statistics.median(values) for name, values in results.items()}


# --- bulk, one process --------------------------------------------------------------------------


async def _bulk_once(contender: Any, total: int, size: int, unix: bool) -> float:
    path = os.path.join(tempfile.mkdtemp(), "s") if unix else None
    client, server = await _tls_pair(contender, path)
    data = b"x" * size
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            for _ in range(total // size):
                await client.send_all(data)

        nursery.start_soon(send)
        await contender.drain(server, total // size * size, size)
    elapsed = time.perf_counter() - start
    await client.aclose()
    await server.aclose()
    return elapsed


def bench_bulk(args: argparse.Namespace) -> list[Row]:
    rows = []
    total = 32 * 2**20 if args.quick else 256 * 2**20
    sizes = [65536] if args.quick else [16384, 65536, 2**20]
    for unix in (False, True):
        for size in sizes:

            def measure(name: str, size: int = size, unix: bool = unix) -> float:
                if name in TRIO_CONTENDERS:
                    seconds = trio.run(_bulk_once, TRIO_CONTENDERS[name](), total, size, unix)
                else:
                    seconds = _run_asyncio(name, total, size, unix)
                return total / seconds / MB

            names = ["ours", "trio", *_asyncio_names()]
            medians = _interleave(args.rounds, measure, names)
            transport = "unix" if unix else "tcp"
            rows.append(
                _row(f"bulk 1 process {transport} {size // 1024} KiB", medians, "MB/s", 1.6)
            )
    return rows


def _asyncio_names() -> list[str]:
    names = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        names.append("uvloop")
    except ImportError:
        pass
    return names


def _run_asyncio(name: str, total: int, size: int, unix: bool) -> float:
    import asyncio

    path = os.path.join(tempfile.mkdtemp(), "s") if unix else None
    if name == "uvloop":
        import uvloop

        return uvloop.run(asyncio_bulk(total, size, path))
    return asyncio.run(asyncio_bulk(total, size, path))


# --- bulk, sender in a child process -------------------------------------------------------------


def _child_sender(name: str, port: int, total: int, size: int) -> None:
    async def main() -> None:
        contender = TRIO_CONTENDERS[name]()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tls = await contender.client(stream)
        data = b"x" * size
        for _ in range(total // size):
            await tls.send_all(data)
        await tls.aclose()

    trio.run(main)


async def _receive_from_child(name: str, total: int, size: int, counter: Any = None) -> float:
    contender = TRIO_CONTENDERS[name]()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_sender, args=(name, port, total, size))
    child.start()
    stream = await listener.accept()
    tls = await contender.server(stream)
    start = time.perf_counter()
    if counter is None:
        await contender.drain(tls, total // size * size, size)
    else:
        with counter:
            await contender.drain(tls, total // size * size, size)
    elapsed = time.perf_counter() - start
    await tls.aclose()
    await listener.aclose()
    await trio.to_thread.run_sync(child.join)
    return elapsed


def bench_bulk2p(args: argparse.Namespace) -> list[Row]:
    total = 64 * 2**20 if args.quick else 512 * 2**20

    def measure(name: str) -> float:
        return total / trio.run(_receive_from_child, name, total, 65536) / MB

    medians = _interleave(args.rounds, measure, ["ours", "trio"])
    return [_row("bulk sender in 2nd process tcp 64 KiB", medians, "MB/s", 2.0)]


# --- handshakes ----------------------------------------------------------------------------------


async def _handshake_once(contender: Any, listener: Any, port: int) -> tuple[Any, Any]:
    out: dict[str, Any] = {}

    async def serve() -> None:
        out["s"] = await contender.server(await listener.accept())

    async def connect() -> None:
        out["c"] = await contender.client(await trio.open_tcp_stream("127.0.0.1", port))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    return out["c"], out["s"]


async def _handshakes(contender: Any, seconds: float) -> tuple[float, float]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    count = 0
    cpu = time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        client, server = await _handshake_once(contender, listener, port)
        await client.aclose()
        await server.aclose()
        count += 1
    cpu = time.process_time() - cpu
    await listener.aclose()
    return count / seconds, cpu / count * 1e6


def bench_handshake(args: argparse.Namespace) -> list[Row]:
    seconds = 2.0 if args.quick else 5.0
    kinds = {"ours": Ours, "ours-full": OursFresh, "trio": Trio}
    per_second: dict[str, list[float]] = {k: [] for k in kinds}
    cpu_us: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for name, kind in kinds.items():
            rate, cpu = trio.run(_handshakes, kind(), seconds)
            per_second[name].append(rate)
            cpu_us[name].append(cpu)
    rate = {k: statistics.median(v) for k, v in per_second.items()}
    cpu = {k: statistics.median(v) for k, v in cpu_us.items()}
    full = {"ours": rate["ours-full"], "trio": rate["trio"]}
    return [
        _row("handshakes/s (layer reused: resumes)", rate, "/s", 1.4),
        _row("handshakes/s (full, no resumption)", full, "/s", 1.4),
        _row("CPU us per handshake (resumed)", cpu, "us", None, lower_is_better=True),
        _row(
            "CPU us per handshake (full)",
            {"ours": cpu["ours-full"], "trio": cpu["trio"]},
            "us",
            None,
            lower_is_better=True,
        ),
    ]


# --- idle memory ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def _idle(name: str, count: int) -> tuple[float, float]:
    import tracemalloc

    contender = TRIO_CONTENDERS[name]()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    warm = [await _tls_pair(contender) for _ in range(5)]  # import and cache costs out of the way
    tracemalloc.start()
    rss0, py0 = _rss_bytes(), tracemalloc.get_traced_memory()[0]
    pairs = [await _tls_pair(contender) for _ in range(count)]
    clients = [c for c, _ in pairs]
    for client in clients:  # keep the server side only: that is what a server holds
        await client.aclose()
    rss1, py1 = _rss_bytes(), tracemalloc.get_traced_memory()[0]
    per_rss = (rss1 - rss0) / count
    per_py = (py1 - py0) / count
    for _, server in pairs + warm:
        await server.aclose()
    return per_rss, per_py


def _idle_child(name: str, count: int, queue: Any) -> None:
    queue.put(trio.run(_idle, name, count))


def bench_idle(args: argparse.Namespace) -> list[Row]:
    count = 500 if args.quick else 2000
    ctx = multiprocessing.get_context("spawn")
    rss: dict[str, float] = {}
    py: dict[str, float] = {}
    for name in ("ours", "trio"):
        queue = ctx.Queue()
        child = ctx.Process(target=_idle_child, args=(name, count, queue))
        child.start()
        rss[name], py[name] = queue.get()
        child.join()
    note = f"N={count}, both ends in process, client side closed"
    return [
        _row(f"idle RSS bytes per server conn ({note})", rss, "B", 1.0, lower_is_better=True),
        _row(
            "idle Python bytes per server conn (tracemalloc)", py, "B", None, lower_is_better=True
        ),
    ]


# --- allocations ---------------------------------------------------------------------------------


async def _allocs(name: str, total: int, size: int) -> float:
    # The sender runs in a child process, so every allocation counted here is the receiver's.
    counter = allocation_counter()
    await _receive_from_child(name, total, size, counter)
    return counter.count / (total / MB)


def bench_alloc(args: argparse.Namespace) -> list[Row]:
    try:
        allocation_counter()
    except RuntimeError as exc:
        print(f"alloc: skipped ({exc})")
        return []
    total = 16 * 2**20 if args.quick else 64 * 2**20
    rows = []
    for size in (65536, 2**20):

        def measure(name: str, size: int = size) -> float:
            return trio.run(_allocs, name, total, size)

        medians = _interleave(args.rounds, measure, ["ours", "trio"])
        label = f"allocations per MB received ({size // 1024} KiB reads)"
        row = _row(label, medians, "/MB", None, lower_is_better=True)
        row["target"] = "<= 600"
        row["pass"] = medians["ours"] <= 600
        rows.append(row)
    return rows


# --- report --------------------------------------------------------------------------------------


def _row(
    measure: str,
    values: dict[str, float],
    unit: str,
    target: float | None,
    *,
    lower_is_better: bool = False,
) -> Row:
    ours, trio_value = values["ours"], values["trio"]
    ratio = (
        (trio_value / ours if lower_is_better else ours / trio_value) if ours and trio_value else 0
    )
    row: Row = {"measure": measure, "unit": unit, **values, "ratio": round(ratio, 2)}
    if target is not None:
        row["target"] = f">= {target}x" if not lower_is_better else f"<= trio ({target}x)"
        row["pass"] = ratio >= target
    return row


def _print(rows: list[Row]) -> None:
    header = (
        f"{'measure':58} {'ours':>10} {'trio':>10} {'ratio':>6} {'asyncio':>9} {'uvloop':>9}"
        "  target"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        extra = "".join(f"{r.get(k, float('nan')):>10.0f}" for k in ("asyncio", "uvloop"))
        verdict = "" if "pass" not in r else ("PASS" if r["pass"] else "MISS")
        print(
            f"{r['measure']:58} {r['ours']:>10.0f} {r['trio']:>10.0f} {r['ratio']:>6.2f}{extra}"
            f"  {r.get('target', '')} {verdict}"
        )


MEASURES = {
    "bulk": bench_bulk,
    "bulk2p": bench_bulk2p,
    "handshake": bench_handshake,
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
    parser.add_argument("--json", help="append results as JSON lines to this file")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    rows: list[Row] = []
    for name in args.only.split(","):
        rows += MEASURES[name.strip()](args)
    _print(rows)
    if args.json:
        stamp = {"date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
                 "version": ta.__version__}  # fmt: skip
        with open(args.json, "a") as f:
            for row in rows:
                f.write(json.dumps({**stamp, **row}) + "\n")


if __name__ == "__main__":
    main()
