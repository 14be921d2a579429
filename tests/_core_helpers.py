"""Drivers shared by the sans-IO core tests: feed input whole or cut, collect events, read state."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import pytest

from trio_tlsattach._cores import END_OF_STREAM, NEED_DATA
from trio_tlsattach._errors import MessageTooLarge

TOO_LARGE = "<too large>"
EOF = "<eof>"

S_co = TypeVar("S_co", covariant=True)


class Core(Protocol):
    """What the drivers need of a core (``PrefixCore``, ``SuffixCore``)."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...

    def next_message(self) -> Any: ...


class HasState(Protocol[S_co]):
    """A core with a ``state`` property (every core)."""

    @property
    def state(self) -> S_co: ...


def state_of(core: HasState[S_co]) -> S_co:
    """``core.state``, read afresh.

    After ``assert core.state is X``, mypy keeps ``core.state`` narrowed to ``X`` across the
    method calls that change it, and would call the next check non-overlapping; the result of a
    call is never narrowed.
    """
    return core.state


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


Chunker = Callable[[bytes], list[bytes]]
"""How a test cuts its input: whole, or one byte at a time."""

CHUNKERS = pytest.mark.parametrize("chunker", [lambda b: [b], bytewise], ids=["whole", "bytewise"])
"""Run a core test with its input fed whole and one byte at a time (h11/wsproto style)."""
