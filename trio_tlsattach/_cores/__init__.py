"""Sans-IO cores of the layers: bytes in, messages or events out, no I/O, no Trio.

The framing cores :class:`PrefixCore` (length header), :class:`SuffixCore` (delimiter) and
:class:`TermCore` (final message) are driven by ``_prefix``, ``_suffix`` and ``_term``;
``next_message()`` answers ``bytes``, :data:`NEED_DATA` or :data:`END_OF_STREAM` (the
sentinels' types are :class:`NeedData` and :class:`EndOfStream`). The protocol cores wrap
well-kept sans-IO libraries or an RFC: :class:`WSCore` (WebSocket, on wsproto) for ``_ws``,
:class:`HTTPCore` (an HTTP/1.1 head, on h11) for ``_http``, and :class:`SOCKS5Core`
(RFC 1928/1929) for ``_socks5``.
"""

from ._common import END_OF_STREAM, NEED_DATA, EndOfStream, NeedData
from .http import HTTPCore
from .prefix import PrefixCore
from .socks5 import SOCKS5Core
from .suffix import SuffixCore
from .term import TermCore
from .ws import WSCore

__all__ = [
    "END_OF_STREAM",
    "NEED_DATA",
    "EndOfStream",
    "HTTPCore",
    "NeedData",
    "PrefixCore",
    "SOCKS5Core",
    "SuffixCore",
    "TermCore",
    "WSCore",
]
