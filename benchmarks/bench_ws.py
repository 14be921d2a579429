"""Benchmark: WebSocket messages per second over TLS, our stack against trio-websocket, one run.

Run ``python benchmarks/bench_ws.py --quick`` (a few seconds) or without ``--quick`` (more
messages, 5 rounds). Machines are shared and noisy, so the two contenders run interleaved
(ours, trio-websocket, ours, ...) for ``--rounds`` and the table gives medians and their ratio
within this run; never compare figures across runs.

Contenders, both client and server in this process over TCP on 127.0.0.1, TLS 1.3 with the
cipher pinned as in ``bench.py`` (``_contenders.contexts``):
  ours            our TLS layers (``TLSClientLayer``/``TLSServerLayer``) + ``WSLayer``
  trio-websocket  ``trio.SSLStream`` + trio-websocket's ``wrap_client_stream`` /
                  ``wrap_server_stream`` (wsproto underneath too)

Measure: one connection per round; the client sends ``count`` binary messages of 1 KiB (then
64 KiB) as fast as it can while the server receives them; messages per second is ``count`` over
the time from the first send to the last message received. The exit status is always 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _contenders import contexts
from bench import _both, _interleave, _listen, _median

import trio_tlsattach as ta
from trio_tlsattach._ws import WSLayer

KiB = 1024
SIZES = (1 * KiB, 64 * KiB)


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener, address = await _listen(None)
    client, server = await _both(lambda: trio.open_tcp_stream(*address), listener.accept)
    await listener.aclose()
    return client, server


async def _ours(count: int, size: int) -> float:
    server_ctx, client_ctx, _ = contexts()
    c, s = await _tcp_pair()
    tls_c, tls_s = await _both(
        lambda: ta.TLSClientLayer(client_ctx, server_hostname="localhost").attach(c),
        lambda: ta.TLSServerLayer(server_ctx).attach(s),
    )
    client, server = await _both(
        lambda: WSLayer(max_size=size).attach(tls_c),
        lambda: WSLayer(server_side=True, max_size=size).attach(tls_s),
    )
    elapsed = await _timed(client.send_message, server.receive_message, count, size)
    await client.aclose()
    await server.aclose()
    return count / elapsed


async def _trio_websocket(count: int, size: int) -> float:
    server_ctx, client_ctx, _ = contexts()
    c, s = await _tcp_pair()
    ssl_c = trio.SSLStream(c, client_ctx, server_hostname="localhost")
    ssl_s = trio.SSLStream(s, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:

        async def accept() -> trio_websocket.WebSocketConnection:
            request = await trio_websocket.wrap_server_stream(nursery, ssl_s, max_message_size=size)
            return await request.accept()

        client, server = await _both(
            lambda: trio_websocket.wrap_client_stream(
                nursery, ssl_c, "localhost", "/", max_message_size=size
            ),
            accept,
        )
        elapsed = await _timed(client.send_message, server.get_message, count, size)
        await client.aclose()
        nursery.cancel_scope.cancel()
    return count / elapsed


async def _timed(
    send_one: Callable[[bytes], Awaitable[object]],
    receive_one: Callable[[], Awaitable[object]],
    count: int,
    size: int,
) -> float:
    """Seconds from the first send to the last of ``count`` messages of ``size`` received."""
    payload = b"m" * size

    async def send() -> None:
        for _ in range(count):
            await send_one(payload)

    async def receive() -> None:
        for _ in range(count):
            await receive_one()

    started = time.perf_counter()
    await _both(send, receive)
    return time.perf_counter() - started


CONTENDERS: dict[str, Callable[[int, int], Awaitable[float]]] = {
    "ours": _ours,
    "trio-websocket": _trio_websocket,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    scale = 1 if args.quick else 4
    rows: list[tuple[str, float, float]] = []
    for size in SIZES:
        count = scale * (4000 if size < 16 * KiB else 400)

        def measure(name: str, count: int = count, size: int = size) -> Any:
            return trio.run(CONTENDERS[name], count, size)

        results = _interleave(rounds, list(CONTENDERS), measure)
        medians = {name: _median(values) for name, values in results.items()}
        rows.append((f"{size // KiB} KiB messages/s", medians["ours"], medians["trio-websocket"]))
    print(f"\n{'measure':24} {'ours':>10} {'trio-websocket':>15} {'ratio':>6}")
    for label, ours, theirs in rows:
        print(f"{label:24} {ours:10.0f} {theirs:15.0f} {ours / theirs:6.2f}")
    print(f"\n({rounds} rounds, median; ratio = ours / trio-websocket, higher is better)")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
    sys.exit(0)
