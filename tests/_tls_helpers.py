"""Helpers shared by the TLS tests: hand-made ciphertext, and reading an exact amount or a line."""

from __future__ import annotations

import trio

import trio_tlsattach as ta


def seal(tls: ta.TLSStream, plaintext: bytes) -> bytes:
    """The TLS records ``tls`` would send for ``plaintext``, made but not sent.

    For tests that cut, corrupt or hold back ciphertext before handing it to the stream below.
    """
    tls._ssl.write(plaintext)
    return tls._take_outgoing()  # after what it still holds back (a server's session tickets)


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``size`` bytes from ``stream``, in as many receives as it takes; fails at its end."""
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(size - len(got))
        assert chunk, f"end of stream after {len(got)} of {size} bytes"
        got += chunk
    return bytes(got)


async def receive_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line, ``\n`` included, read a byte at a time so that nothing after it is taken;
    fails at the stream's end."""
    line = b""
    while not line.endswith(b"\n"):
        byte = await stream.receive_some(1)
        assert byte, f"end of stream after {line!r}"
        line += byte
    return line
