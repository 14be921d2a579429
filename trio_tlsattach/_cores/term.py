"""Sans-IO core of the terminal-message layer (libdill's ``term_attach``).

Theory of operation
-------------------
``term`` sits on a *message* layer and gives it a clean end: one agreed ``final_message``
(0 to 32 KiB, possibly empty, as libdill allows) means "no more messages from me". Every other
message passes through unchanged, in both directions; the layer adds no bytes of its own.

* Send side: :meth:`TermCore.encode` returns the message as it is, but refuses (EINVAL) a
  message equal to ``final_message``, since it would end the peer's stream. :meth:`send_done`
  hands out ``final_message`` for the layer to send; after it, sends raise
  :class:`SendAfterDone` (EPIPE), and so does a second ``send_done``.
* Receive side: :meth:`TermCore.receive` classifies one message from below: the final
  message gives :data:`END_OF_STREAM`, anything else comes back as ``bytes``. Once the peer is
  done, the core takes no more messages (:attr:`peer_done` is true): whatever the layer below
  delivers afterwards belongs to whoever detaches this layer, so the Trio layer keeps it.
  :meth:`receive_eof` (the layer below ended) before the final message raises
  :class:`ConnectionBroken`, and so does every later receive call.

States, changed only through the transition table::

    OPEN         --SEND_FINAL-->     SEND_DONE     --RECEIVE_FINAL-->  BOTH_DONE
    OPEN         --RECEIVE_FINAL-->  RECEIVE_DONE  --SEND_FINAL----->  BOTH_DONE

``detach`` is clean in ``BOTH_DONE``: both ends have exchanged the final message, and the
message layer below is handed back unchanged.

Per-connection state: the state and a "broken" flag for the receive direction.
"""

from __future__ import annotations

import enum
from typing import Final, final

from .._errors import ConnectionBroken, InvalidArgument, SendAfterDone
from ._common import END_OF_STREAM, BytesLike, EndOfStream, StateMachine, to_bytes

__all__ = ["MAX_FINAL_MESSAGE", "TermCore", "TermEvent", "TermState"]

#: The longest ``final_message`` accepted: 32 KiB.
MAX_FINAL_MESSAGE: Final = 32 * 1024


class TermState(enum.Enum):
    """Which directions of a :class:`TermCore` have seen the final message."""

    OPEN = "OPEN"  #: neither side is done
    SEND_DONE = "SEND_DONE"  #: we sent the final message
    RECEIVE_DONE = "RECEIVE_DONE"  #: the peer sent the final message
    BOTH_DONE = "BOTH_DONE"  #: both did; the layer can detach


class TermEvent(enum.Enum):
    """Events that move a :class:`TermCore` between :class:`TermState` values."""

    SEND_FINAL = "SEND_FINAL"  #: send_done() handed out the final message
    RECEIVE_FINAL = "RECEIVE_FINAL"  #: the final message arrived from the peer


_S, _E = TermState, TermEvent

#: ``(state, event) -> new state``.
TRANSITIONS: Final = {
    (_S.OPEN, _E.SEND_FINAL): _S.SEND_DONE,
    (_S.OPEN, _E.RECEIVE_FINAL): _S.RECEIVE_DONE,
    (_S.SEND_DONE, _E.RECEIVE_FINAL): _S.BOTH_DONE,
    (_S.RECEIVE_DONE, _E.SEND_FINAL): _S.BOTH_DONE,
}

_LOCAL_DONE: Final = frozenset({_S.SEND_DONE, _S.BOTH_DONE})
_PEER_DONE: Final = frozenset({_S.RECEIVE_DONE, _S.BOTH_DONE})


@final
class TermCore:
    """A message stream ended by an agreed final message.

    ``final_message`` must be bytes-like and at most 32 KiB, else :class:`InvalidArgument`.
    """

    __slots__ = ("_broken", "_final", "_machine")

    def __init__(self, final_message: BytesLike) -> None:
        self._final = to_bytes(final_message, "final_message")
        if len(self._final) > MAX_FINAL_MESSAGE:
            raise InvalidArgument(
                f"final_message must be at most {MAX_FINAL_MESSAGE} bytes, not {len(self._final)}"
            )
        self._machine = StateMachine(TRANSITIONS, TermState.OPEN)
        self._broken = False

    def __repr__(self) -> str:
        return f"<TermCore {self._final!r} state={self.state.name}>"

    @property
    def final_message(self) -> bytes:
        """The message that ends a direction of the stream."""
        return self._final

    @property
    def state(self) -> TermState:
        """The current :class:`TermState`."""
        return self._machine.state

    @property
    def local_done(self) -> bool:
        """Whether :meth:`send_done` was called (sends now raise :class:`SendAfterDone`)."""
        return self._machine.state in _LOCAL_DONE

    @property
    def peer_done(self) -> bool:
        """Whether the peer's final message arrived; later messages are not the core's."""
        return self._machine.state in _PEER_DONE

    # -- send side ---------------------------------------------------------------------------

    def encode(self, message: BytesLike) -> bytes:
        """The message to send, unchanged; EINVAL if it is the final message, EPIPE when done."""
        if self.local_done:
            raise SendAfterDone("send after send_done()")
        data = to_bytes(message, "message")
        if data == self._final:
            raise InvalidArgument("message equals final_message; it would end the peer's stream")
        return data

    def send_done(self) -> bytes:
        """Mark the send side done and return the final message to send (EPIPE if done)."""
        if self.local_done:
            raise SendAfterDone("send_done() already called")
        self._machine.fire(TermEvent.SEND_FINAL)
        return self._final

    # -- receive side ------------------------------------------------------------------------

    def receive(self, message: BytesLike) -> bytes | EndOfStream:
        """Classify one message from below: ``bytes`` to deliver, or :data:`END_OF_STREAM`.

        EINVAL once :attr:`peer_done` (messages after the final one are not consumed);
        ECONNRESET if the layer below already ended without the final message.
        """
        self._check_receive()
        data = to_bytes(message, "message")
        if data == self._final:
            self._machine.fire(TermEvent.RECEIVE_FINAL)
            return END_OF_STREAM
        return data

    def receive_eof(self) -> None:
        """The layer below ended. Fine after the final message; otherwise ECONNRESET."""
        if self.peer_done:
            return
        self._broken = True
        self._check_receive()

    def _check_receive(self) -> None:
        if self._broken:
            raise ConnectionBroken("stream ended without the final message")
        if self.peer_done:
            raise InvalidArgument("the peer is done; keep later messages for detach()")
