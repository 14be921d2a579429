"""ProtocolStack: a transport with layers pushed on top of it and popped off again.

Theory of operation
-------------------
The stack holds one reference, ``top``; everything else is reached through each handle's
``below`` link, so the stack never disagrees with the handles about what is attached.
``push`` calls the layer's ``attach`` on the current top and makes the result the new top;
``pop`` calls the top's ``detach`` and makes what it returns the new top, with the bytes read past
the layer's end already pushed back in front of it. Failure rules are libdill's: a failed push
closes the stack below (the layer's ``attach`` does it), a failed pop closes the whole stack.

STARTTLS is a ``push`` on a live plaintext stack; TLS inside TLS is two pushes.
"""

from __future__ import annotations

from typing import Any, TypeVar, final

from ._base import Handle, Layer, close_shielded
from ._deadline import FOREVER
from ._errors import NotSupported
from ._transports import wrap_stream

__all__ = ["ProtocolStack"]

H = TypeVar("H", bound=Handle)


@final
class ProtocolStack:
    """A byte stream with protocol layers stacked on it.

    ::

        async with ProtocolStack(await open_tcp("localhost", 8443)) as stack:
            tls = await stack.push(TLSClientLayer(ctx, server_hostname="localhost"))
            msgs = await stack.push(PrefixLayer(4))
            await msgs.send_message(b"hello")
            reply = await msgs.receive_message()
            await stack.pop()            # back to TLS
            tcp = await stack.pop()      # back to plain TCP, no byte lost
            print(stack)                 # <ProtocolStack tcp>

    ``transport`` may be any of this package's transports or any ``trio.abc.Stream``
    (see :func:`wrap_stream`). Leaving the ``async with`` closes the whole stack.
    """

    def __init__(self, transport: Any) -> None:
        self._top = wrap_stream(transport)

    @property
    def top(self) -> Handle:
        """The topmost handle: the one to send and receive on."""
        return self._top

    @property
    def layers(self) -> list[Handle]:
        """Every handle from the transport (first) to the top (last)."""
        handles: list[Handle] = []
        handle: Handle | None = self._top
        while handle is not None:
            handles.append(handle)
            handle = handle.below
        handles.reverse()
        return handles

    def find(self, kind: type[H]) -> H | None:
        """The topmost handle that is an instance of ``kind`` (e.g. ``TLSStream``), or None."""
        handle: Handle | None = self._top
        while handle is not None:
            if isinstance(handle, kind):
                return handle
            handle = handle.below
        return None

    async def push(self, layer: Layer[H], deadline: float = FOREVER) -> H:
        """Attach ``layer`` on top and return the new top.

        The layer checks the kind of what is below (:class:`ProtocolMismatch` otherwise). On any
        failure, cancellation included, the stack is closed, as libdill does (even if the
        layer's ``attach`` forgot to).
        """
        self._top._check()
        try:
            attached = await layer.attach(self._top, deadline)
        except BaseException:
            await close_shielded(self._top)
            raise
        self._top = attached
        return attached

    async def pop(self, deadline: float = FOREVER) -> Handle:
        """Detach the top layer cleanly and return the handle below it (the new top).

        On failure the whole stack is closed and the error is raised.
        """
        top = self._top
        if top.below is None:
            raise NotSupported(f"nothing to pop: {top.label()} is the transport")
        detach = getattr(top, "detach", None)
        if detach is None:
            raise NotSupported(f"{top.label()} cannot be detached")
        below: Handle = await detach(deadline)
        self._top = below
        return below

    async def aclose(self) -> None:
        """Close every layer and the transport (forcefully, like libdill's ``hclose``)."""
        await self._top.aclose()

    async def __aenter__(self) -> ProtocolStack:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return "<ProtocolStack " + " > ".join(h.label() for h in self.layers) + ">"
