"""Drivers shared by the sans-IO framing core tests: feed input whole or cut, collect events."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Protocol

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA
from trio_tlsattach._errors import MessageTooLarge

TOO_LARGE = "<too large>"
EOF = "<eof>"


class Core(Protocol):
    """What the drivers need of a core (``PrefixCore``, ``SuffixCore``)."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...

    def next_message(self) -> Any: ...


def drain(core: Core, out: list[bytes | str]) -> None:
    """Pull every available message; record oversize errors and the end of stream."""
    while True:
        try:
            result = core.next_message()
        except MessageTooLarge:
            out.append(TOO_LARGE)
            continue
        if result is NEED_DATA:
            return
        if result is END_OF_STREAM:
            out.append(EOF)
            return
        out.append(result)


def run(core: Core, chunks: Iterable[bytes], *, eof: bool = True) -> list[bytes | str]:
    """Feed ``chunks`` one by one (then the end of stream) and return every event."""
    out: list[bytes | str] = []
    for chunk in chunks:
        core.feed(chunk)
        drain(core, out)
    if eof:
        core.feed_eof()
        drain(core, out)
    return out


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets."""
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]
