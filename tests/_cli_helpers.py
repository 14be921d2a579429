"""What the tests of the ``tlsattach`` subcommands share: reading what a server prints."""

from __future__ import annotations

import select
from typing import IO

TIMEOUT = 20
"""Seconds a command-line test waits for any one thing before failing (never hangs)."""


def read_line(stream: IO[bytes], what: str) -> str:
    """One line from an unbuffered pipe, or fail after TIMEOUT seconds (never hang)."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], TIMEOUT)
        assert ready, f"no {what} within {TIMEOUT} s (got {line!r})"
        byte = stream.read(1)
        if not byte:
            break
        line += byte
    return line.decode()
