"""Memory per idle TLS 1.3 server connection, server side only.

The measuring process is a fresh ``spawn`` child per contender (so earlier measures do not
pollute its RSS). It accepts connections from a second child that only opens clients and holds
them, so nothing of the client side is in the measured process. Both raise ``RLIMIT_NOFILE`` to
the hard limit. Sequence: ``WARM`` connections (imports and caches out of the way), RSS read,
``count`` more connections, RSS read (the RSS delta / count, state blocks included); then
``tracemalloc`` is started for ``min(count, 500)`` further connections (the Python-heap delta per
connection; kept out of the RSS phase because tracemalloc's own bookkeeping costs RSS).
"""

from __future__ import annotations

import gc
import multiprocessing
import resource
import tracemalloc
from typing import Any

import trio
from _contenders import TRIO_CONTENDERS

WARM = 5


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _hold_clients(name: str, port: int, count: int, release: Any) -> None:
    _raise_nofile()

    async def main() -> None:
        contender = TRIO_CONTENDERS[name]()
        held = []
        for _ in range(count):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            held.append(await contender.client(stream))
        await trio.to_thread.run_sync(release.wait)

    trio.run(main)


async def _serve(name: str, count: int) -> tuple[float, float]:
    _raise_nofile()
    contender = TRIO_CONTENDERS[name]()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    traced = min(count, 500)
    mp = multiprocessing.get_context("spawn")
    release = mp.Event()
    client = mp.Process(
        target=_hold_clients, args=(name, port, WARM + count + traced, release), daemon=True
    )
    client.start()
    held = []

    async def accept(n: int) -> None:
        for _ in range(n):
            held.append(await contender.server(await listener.accept()))

    await accept(WARM)
    gc.collect()
    rss0 = rss_bytes()
    await accept(count)
    gc.collect()
    rss1 = rss_bytes()
    tracemalloc.start()
    py0 = tracemalloc.get_traced_memory()[0]
    await accept(traced)
    gc.collect()
    py1 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    release.set()
    await trio.to_thread.run_sync(client.join)
    return (rss1 - rss0) / count, (py1 - py0) / traced


def _child(name: str, count: int, queue: Any) -> None:
    queue.put(trio.run(_serve, name, count))


def idle_per_connection(name: str, count: int) -> tuple[float, float]:
    """(RSS bytes, Python heap bytes) per idle server connection, in a fresh process."""
    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    child = mp.Process(target=_child, args=(name, count, queue))
    child.start()
    try:
        result: tuple[float, float] = queue.get(timeout=600)
    finally:
        child.join(timeout=30)
    return result
