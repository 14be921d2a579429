"""The prefix layer: each message is a fixed-size length header, then the payload.

Theory of operation
-------------------
On the wire: ``hdrlen`` bytes (1 to 8) holding the payload's length, big-endian unless told
otherwise, then the payload. ``PrefixLayer(3, big_endian=False)`` sends ``b"First"`` as
``05 00 00`` + ``b"First"``. The parsing and its states live in the sans-IO
:class:`~trio_tlsattach._cores.PrefixCore`; the Trio side is the shared
:class:`~trio_tlsattach._framing.FramedStream` (send, receive, done, detach, close). A header
announcing more than ``max_size`` is :class:`MessageTooLarge` (EMSGSIZE) and that message is
skipped, so the next one is read correctly.
"""

from __future__ import annotations

from typing import Any, Final, final

from ._base import Kind
from ._cores import PrefixCore
from ._cores._common import DEFAULT_MAX_SIZE
from ._deadline import FOREVER
from ._errors import NotSupported
from ._framing import FramedStream, attach_framing

__all__ = [
    "PREFIX_BIG_ENDIAN",
    "PREFIX_LITTLE_ENDIAN",
    "PrefixLayer",
    "prefix_attach",
    "prefix_detach",
]

PREFIX_BIG_ENDIAN: Final = 0
"""libdill's flag: the length header is big-endian (the default)."""
PREFIX_LITTLE_ENDIAN: Final = 1
"""libdill's flag: the length header is little-endian."""


@final
class PrefixLayer:
    """Length-prefixed messages on a byte stream.

    >>> msgs = await stack.push(PrefixLayer(4))        # 4-byte big-endian lengths
    >>> await msgs.send_message(b"hello")               # wire: 00 00 00 05 hello
    """

    below_kind: Final = Kind.BYTES

    def __init__(self, hdrlen: int, *, big_endian: bool = True, max_size: int = DEFAULT_MAX_SIZE):
        PrefixCore(hdrlen, big_endian=big_endian, max_size=max_size)  # EINVAL now, not later
        self.hdrlen = hdrlen
        self.big_endian = big_endian
        self.max_size = max_size

    async def attach(self, stream: Any, deadline: float = FOREVER) -> FramedStream:
        """Frame ``stream``; ProtocolMismatch (and ``stream`` closed) if it carries messages."""
        core = PrefixCore(self.hdrlen, big_endian=self.big_endian, max_size=self.max_size)
        return await attach_framing(stream, core, f"prefix({self.hdrlen})", deadline)


# --- libdill facade -----------------------------------------------------------------------------


async def prefix_attach(s: Any, hdrlen: int, flags: int = PREFIX_BIG_ENDIAN) -> FramedStream:
    """libdill's ``prefix_attach(s, hdrlen, flags)``."""
    return await PrefixLayer(hdrlen, big_endian=not flags & PREFIX_LITTLE_ENDIAN).attach(s)


async def prefix_detach(s: FramedStream, deadline: float = FOREVER) -> Any:
    """libdill's ``prefix_detach``: the byte stream below, unread bytes pushed back."""
    if not isinstance(s, FramedStream):
        raise NotSupported(f"not a framing layer: {type(s).__name__}")
    return await s.detach(deadline)
