"""The prefix layer: each message is a fixed-size length header, then the payload.

Theory of operation
-------------------
On the wire: ``hdrlen`` bytes (1 to 8) holding the payload's length, big-endian unless told
otherwise, then the payload. ``PrefixLayer(3, big_endian=False)`` sends ``b"First"`` as
``05 00 00`` + ``b"First"``. The parsing and its states live in the sans-IO
:class:`~trio_tlsattach._cores.PrefixCore`; the Trio side is the shared
:class:`~trio_tlsattach._framing.FramedStream` (send, receive, done, detach, close). A header
announcing more than ``max_size`` is :class:`MessageTooLarge` (EMSGSIZE) and that message is
skipped, so the next one is read correctly. ``send_eof`` half-closes the byte stream below;
``detach`` exchanges nothing and hands the byte stream back with every byte read past the last
returned message pushed back in front (see ``_framing`` for the details, mid-message included).
"""

from __future__ import annotations

from typing import Any, Final, final

from ._base import ByteStream, Kind
from ._cores import PrefixCore
from ._cores._common import DEFAULT_MAX_SIZE, check_int
from ._deadline import FOREVER
from ._framing import FramedStream, attach_framing, framing_detach

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
    """Length-prefixed messages on a byte stream: the recipe, checked once (EINVAL).

    ``hdrlen`` is 1 to 8 bytes; ``max_size`` is the largest message this end accepts (a bigger
    one is :class:`MessageTooLarge` and is skipped). Attach it directly or push it on a stack::

        msgs = await stack.push(PrefixLayer(4))     # 4-byte big-endian lengths
        await msgs.send_message(b"hello")           # wire: 00 00 00 05 68 65 6c 6c 6f
        reply = await msgs.receive_message(after(5))
    """

    __slots__ = ("_big_endian", "_hdrlen", "_max_size")
    below_kind: Final = Kind.BYTES

    def __init__(
        self, hdrlen: int, *, big_endian: bool = True, max_size: int = DEFAULT_MAX_SIZE
    ) -> None:
        PrefixCore(hdrlen, big_endian=big_endian, max_size=max_size)  # EINVAL now, not later
        self._hdrlen = hdrlen
        self._big_endian = big_endian
        self._max_size = max_size

    def __repr__(self) -> str:
        order = "" if self._big_endian else ", big_endian=False"
        return f"PrefixLayer({self._hdrlen}{order}, max_size={self._max_size})"

    @property
    def hdrlen(self) -> int:
        """Bytes in each length header (1 to 8)."""
        return self._hdrlen

    @property
    def big_endian(self) -> bool:
        """Whether the length header is big-endian (network order, the default)."""
        return self._big_endian

    @property
    def max_size(self) -> int:
        """The largest message the receive side accepts."""
        return self._max_size

    async def attach(self, stream: Any, deadline: float = FOREVER) -> FramedStream:
        """Frame ``stream``; ProtocolMismatch (and ``stream`` closed) if it carries messages."""
        core = PrefixCore(self._hdrlen, big_endian=self._big_endian, max_size=self._max_size)
        return await attach_framing(stream, core, f"prefix({self._hdrlen})", deadline)


# --- libdill facade -----------------------------------------------------------------------------


async def prefix_attach(s: Any, hdrlen: int, flags: int = PREFIX_BIG_ENDIAN) -> FramedStream:
    """libdill's ``prefix_attach(s, hdrlen, flags)``; ``flags`` is one of the ``PREFIX_*``.

    >>> msgs = await prefix_attach(tcp, 2, PREFIX_LITTLE_ENDIAN)
    """
    check_int(flags, "flags", PREFIX_BIG_ENDIAN, PREFIX_LITTLE_ENDIAN)
    return await PrefixLayer(hdrlen, big_endian=flags != PREFIX_LITTLE_ENDIAN).attach(s)


async def prefix_detach(s: FramedStream, deadline: float = FOREVER) -> ByteStream:
    """libdill's ``prefix_detach``: the byte stream below, unread bytes pushed back."""
    return await framing_detach(s, deadline)
