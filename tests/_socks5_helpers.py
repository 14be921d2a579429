"""What the SOCKS5 tests share: running both ends of a conversation at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def run_both(
    client: Callable[[], Awaitable[object]], proxy: Callable[[], Awaitable[object]]
) -> tuple[BaseException | None, BaseException | None]:
    """Run both ends concurrently; return what each raised (None if it returned)."""
    errors: list[BaseException | None] = [None, None]

    async def run(index: int, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            await fn()
        except OSError as exc:  # StackError and the OS's own
            errors[index] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, client)
        nursery.start_soon(run, 1, proxy)
    return errors[0], errors[1]
