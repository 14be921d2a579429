"""libdill's errno table as exception classes a Trio user already knows how to catch.

Theory of operation
-------------------
libdill reports every failure as ``-1`` plus an ``errno``. Here every failure is an exception
that is *both* an :class:`OSError` carrying that errno (so code ported from libdill can switch
on ``exc.errno``) *and* the Trio or built-in exception a Trio user already catches (so
``except trio.BrokenResourceError`` keeps working on a stack of our layers). Where the standard
library has a matching ``OSError`` subclass (``TimeoutError``, ``ConnectionResetError``,
``BrokenPipeError``) we inherit from it too.

``ECANCELED`` has no class: Trio's own :class:`trio.Cancelled` propagates untouched. ``EMFILE``
and ``ENFILE`` come from the OS as plain ``OSError`` and are never wrapped.

This module imports nothing from the package (it is part of the contract layer).
"""

from __future__ import annotations

import errno as _errno
import ssl
from typing import ClassVar, final

import trio

__all__ = [
    "BadHandle",
    "ConnectionBroken",
    "DeadlineExceeded",
    "InvalidArgument",
    "InvalidArgumentType",
    "MessageTooLarge",
    "NotSupported",
    "OutOfStateBlocks",
    "ProtocolMismatch",
    "ProtocolViolation",
    "SendAfterDone",
    "StackError",
    "TLSError",
]


class StackError(OSError):
    """Base class of every error this package raises; an :class:`OSError` with libdill's errno.

    Each subclass fixes its errno, so ``StackError`` subclasses are raised with just a message::

        raise BadHandle("stream is owned by the TLS layer above it")

    and ``exc.errno``, ``exc.strerror`` and ``str(exc)`` read like any ``OSError``.
    """

    errno: int  # always set (OSError allows None)
    default_errno: ClassVar[int] = _errno.EIO

    def __init__(self, message: str = "") -> None:
        super().__init__(self.default_errno, message or _errno.errorcode[self.default_errno])

    def __reduce__(self) -> tuple[type[StackError], tuple[str], dict[str, object]]:
        # OSError pickles as (errno, strerror); ours are constructed from the message alone.
        # The instance dict carries extra attributes (TLSError.reason) across.
        return (type(self), (self.strerror or "",), dict(self.__dict__))


@final
class BadHandle(StackError, trio.ClosedResourceError):
    """EBADF: the handle is closed, detached, or owned by a layer attached above it.

    Once a layer attaches to a stream, the layer owns it: keep using the object the attach
    returned, and get the old one back with ``detach()``.
    """

    default_errno = _errno.EBADF


@final
class ConnectionBroken(StackError, ConnectionResetError, trio.BrokenResourceError):
    """ECONNRESET: the peer reset the connection, a record was truncated, the stream ended
    where the protocol required a clean close, or this direction was already broken.

    Errors are sticky per direction: once a send was interrupted half-way, every later send
    raises this too.
    """

    default_errno = _errno.ECONNRESET


class InvalidArgument(StackError, ValueError):
    """EINVAL: a bad deadline, memory block, certificate or key, or layer parameter."""

    default_errno = _errno.EINVAL


@final
class InvalidArgumentType(InvalidArgument, TypeError):
    """EINVAL for an argument of the wrong type; also a :class:`TypeError`, as Python expects."""


@final
class OutOfStateBlocks(StackError, MemoryError):
    """ENOMEM: a :class:`StateBlockPool` has no free block left.

    A server uses this for admission control: refuse the connection instead of growing.
    """

    default_errno = _errno.ENOMEM


@final
class NotSupported(StackError):
    """ENOTSUP: this layer or transport does not offer the operation (e.g. ``send_eof`` on a
    transport that cannot half-close)."""

    default_errno = _errno.ENOTSUP


@final
class ProtocolMismatch(StackError, TypeError):
    """EPROTO: a bytestream layer attached to a message stream, or the reverse.

    As in libdill, the stream that was passed in is closed before this is raised.
    """

    default_errno = _errno.EPROTO


class ProtocolViolation(StackError, trio.BrokenResourceError):
    """EPROTO: the peer broke the protocol of a layer (TLS, WebSocket, HTTP, SOCKS5).

    Each layer raises its own subclass (:class:`TLSError`, ``WebSocketError``,
    ``HTTPProtocolError``, ``SOCKS5ProtocolError``) with the details of its protocol; catch
    this class to handle any of them, or ``trio.BrokenResourceError`` as for any broken stream::

        try:
            request = await http.receive_request()
        except ProtocolViolation:
            await http.aclose()   # the peer speaks something else
    """

    default_errno = _errno.EPROTO


@final
class TLSError(ProtocolViolation):
    """EPROTO: the TLS handshake failed, a record was bad, or the peer sent an alert.

    ``__cause__`` is the :class:`ssl.SSLError` when there was one; :attr:`reason` is
    OpenSSL's short reason (``"CERTIFICATE_VERIFY_FAILED"``, ``"WRONG_VERSION_NUMBER"``,
    ``"TLSV1_ALERT_UNKNOWN_CA"``...) and :attr:`alert` the alert name when an alert was involved.
    """

    default_errno = _errno.EPROTO

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def alert(self) -> str | None:
        """The TLS alert named in :attr:`reason` (``"unknown_ca"``...), or ``None``."""
        marker = "ALERT_"
        if self.reason and marker in self.reason:
            return self.reason.split(marker, 1)[1].lower()
        return None

    @classmethod
    def from_ssl(cls, exc: ssl.SSLError, what: str) -> TLSError:
        """Wrap an :class:`ssl.SSLError` raised while doing ``what``; the caller chains it."""
        reason = getattr(exc, "reason", None)
        detail = getattr(exc, "verify_message", None) or reason or str(exc)
        return cls(f"{what}: {detail}", reason=reason)


@final
class DeadlineExceeded(StackError, TimeoutError, trio.TooSlowError):
    """ETIMEDOUT: the deadline passed before the operation could complete."""

    default_errno = _errno.ETIMEDOUT


@final
class SendAfterDone(StackError, BrokenPipeError, trio.ClosedResourceError):
    """EPIPE: a send after ``send_eof()`` / ``tls_done()`` on the same stream."""

    default_errno = _errno.EPIPE


@final
class MessageTooLarge(StackError, ValueError):
    """EMSGSIZE: a message is over the framing layer's limit.

    On receive the oversized message is skipped, so the next ``receive_message`` returns the
    message after it; the stream stays usable.
    """

    default_errno = _errno.EMSGSIZE
