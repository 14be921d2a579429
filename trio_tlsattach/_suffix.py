"""The suffix layer: each message is the payload followed by a delimiter (CRLF, or any 1-32 bytes).

Theory of operation
-------------------
On the wire: the payload, then ``delimiter``. A message that contains the delimiter cannot be
sent (EINVAL: the peer would read two messages). A delimiter split across reads is found;
more than ``max_size`` bytes without a delimiter is :class:`MessageTooLarge` (EMSGSIZE) and the
rest of that message, up to its delimiter, is skipped. The parsing lives in the sans-IO
:class:`~trio_tlsattach._cores.SuffixCore`; the Trio side is the shared
:class:`~trio_tlsattach._framing.FramedStream`. ``CRLFLayer()`` is ``SuffixLayer(b"\\r\\n")``.
``send_eof`` half-closes the byte stream below; ``detach`` exchanges nothing and hands the byte
stream back with every byte read past the last returned message pushed back in front.
"""

from __future__ import annotations

from typing import Any, Final, final

from ._base import ByteStream, Kind
from ._cores import SuffixCore
from ._cores._common import DEFAULT_MAX_SIZE, BytesLike
from ._deadline import FOREVER
from ._framing import FramedStream, attach_framing, framing_detach

__all__ = ["CRLFLayer", "SuffixLayer", "suffix_attach", "suffix_detach"]


class SuffixLayer:
    """Delimiter-terminated messages on a byte stream: the recipe, checked once (EINVAL).

    ``delimiter`` is 1 to 32 bytes; ``max_size`` is the largest message this end accepts (a
    longer run without a delimiter is :class:`MessageTooLarge` and is skipped)::

        lines = await stack.push(SuffixLayer(b"\\n"))
        await lines.send_message(b"hello")          # wire: hello\\n
        line = await lines.receive_message(after(5))
    """

    __slots__ = ("_delimiter", "_max_size")
    below_kind: Final = Kind.BYTES

    def __init__(self, delimiter: BytesLike, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._delimiter = SuffixCore(delimiter, max_size=max_size).delimiter  # EINVAL now
        self._max_size = max_size

    def __repr__(self) -> str:
        return f"SuffixLayer({self._delimiter!r}, max_size={self._max_size})"

    @property
    def delimiter(self) -> bytes:
        """The bytes that end each message."""
        return self._delimiter

    @property
    def max_size(self) -> int:
        """The largest message the receive side accepts."""
        return self._max_size

    def _name(self) -> str:
        return f"suffix({self._delimiter!r})"

    async def attach(self, stream: Any, deadline: float = FOREVER) -> FramedStream:
        """Frame ``stream``; ProtocolMismatch (and ``stream`` closed) if it carries messages."""
        core = SuffixCore(self._delimiter, max_size=self._max_size)
        return await attach_framing(stream, core, self._name(), deadline)


@final
class CRLFLayer(SuffixLayer):
    """``SuffixLayer(b"\\r\\n")``: text protocols' lines (SMTP, IMAP, Redis...); label ``crlf``.

    >>> lines = await stack.push(CRLFLayer())
    """

    __slots__ = ()

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        super().__init__(b"\r\n", max_size=max_size)

    def __repr__(self) -> str:
        return f"CRLFLayer(max_size={self._max_size})"

    def _name(self) -> str:
        return "crlf"


async def suffix_attach(s: Any, suffix: BytesLike) -> FramedStream:
    """libdill's ``suffix_attach(s, suffix, suffixlen)``.

    >>> lines = await suffix_attach(tcp, b"\\r\\n")
    """
    return await SuffixLayer(suffix).attach(s)


async def suffix_detach(s: FramedStream, deadline: float = FOREVER) -> ByteStream:
    """libdill's ``suffix_detach``: the byte stream below, unread bytes pushed back."""
    return await framing_detach(s, deadline)
