"""The WebSocket layer's protocol error: EPROTO, and a ``trio.BrokenResourceError``.

Part of the contract level (imports only ``_errors`` and Trio), so that the sans-IO core in
``_cores.ws`` can raise it without importing a layer. A candidate for ``_errors`` itself.
"""

from __future__ import annotations

import errno as _errno
from typing import final

import trio

from ._errors import StackError

__all__ = ["WebSocketError"]


@final
class WebSocketError(StackError, trio.BrokenResourceError):
    """EPROTO: the WebSocket peer broke the protocol, or the upgrade handshake failed.

    Raised for a malformed upgrade request or response, a wrong ``Sec-WebSocket-Accept``, an
    over-long header, a frame with reserved bits set or a bad mask, a text message that is not
    valid UTF-8, a bad close frame. The receive direction is failed for good (errors are
    sticky), but every message that arrived before the bad input was delivered first.

    :attr:`close_code` is the status this end put in the close frame it sent back (1002
    protocol error, 1007 invalid payload data), or ``None`` when the handshake failed.
    """

    default_errno = _errno.EPROTO

    def __init__(self, message: str = "", *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
