"""The suffix layer: each message is the payload followed by a delimiter (CRLF, or any 1-32 bytes).

Theory of operation
-------------------
On the wire: the payload, then ``delimiter``. A message that contains the delimiter cannot be
sent (EINVAL: the peer would read two messages). A delimiter split across reads is found;
more than ``max_size`` bytes without a delimiter is :class:`MessageTooLarge` (EMSGSIZE) and the
rest of that message, up to its delimiter, is skipped. The parsing lives in the sans-IO
:class:`~trio_tlsattach._cores.SuffixCore`; the Trio side is the shared
:class:`~trio_tlsattach._framing.FramedStream`. ``CRLFLayer()`` is ``SuffixLayer(b"\\r\\n")``.
"""

from __future__ import annotations

from typing import Any, Final, final

from ._base import Kind
from ._cores import SuffixCore
from ._cores._common import DEFAULT_MAX_SIZE
from ._deadline import FOREVER
from ._framing import FramedStream, attach_framing
from ._prefix import prefix_detach

__all__ = ["CRLFLayer", "SuffixLayer", "suffix_attach", "suffix_detach"]


class SuffixLayer:
    """Delimiter-terminated messages on a byte stream.

    >>> lines = await stack.push(SuffixLayer(b"\\n"))
    >>> await lines.send_message(b"hello")              # wire: hello\\n
    """

    below_kind: Final = Kind.BYTES

    def __init__(self, delimiter: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.delimiter = SuffixCore(delimiter, max_size=max_size).delimiter  # EINVAL now
        self.max_size = max_size

    def _name(self) -> str:
        return f"suffix({self.delimiter!r})"

    async def attach(self, stream: Any, deadline: float = FOREVER) -> FramedStream:
        """Frame ``stream``; ProtocolMismatch (and ``stream`` closed) if it carries messages."""
        core = SuffixCore(self.delimiter, max_size=self.max_size)
        return await attach_framing(stream, core, self._name(), deadline)


@final
class CRLFLayer(SuffixLayer):
    """``SuffixLayer(b"\\r\\n")``: text protocols' lines (SMTP, IMAP, Redis...)."""

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        super().__init__(b"\r\n", max_size=max_size)

    def _name(self) -> str:
        return "crlf"


async def suffix_attach(s: Any, suffix: bytes) -> FramedStream:
    """libdill's ``suffix_attach(s, suffix)``."""
    return await SuffixLayer(suffix).attach(s)


suffix_detach = prefix_detach
"""libdill's ``suffix_detach``: the byte stream below, unread bytes pushed back."""
