"""Sans-IO cores of the message-framing layers: bytes in, messages out, no I/O, no Trio.

:class:`PrefixCore` (length header), :class:`SuffixCore` (delimiter) and :class:`TermCore`
(final message) are driven by the Trio layers in ``_prefix``, ``_suffix`` and ``_term``.
``next_message()`` answers ``bytes``, :data:`NEED_DATA` or :data:`END_OF_STREAM`; the sentinels'
types are :class:`NeedData` and :class:`EndOfStream`.
"""

from ._common import END_OF_STREAM, NEED_DATA, EndOfStream, NeedData
from .prefix import PrefixCore
from .suffix import SuffixCore
from .term import TermCore

__all__ = [
    "END_OF_STREAM",
    "NEED_DATA",
    "EndOfStream",
    "NeedData",
    "PrefixCore",
    "SuffixCore",
    "TermCore",
]
