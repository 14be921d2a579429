"""Transports: the byte streams at the bottom of a stack (TCP, Unix sockets, pipes, memory).

Theory of operation
-------------------
Sockets and pipes share one engine, :class:`FdTransport`: the file descriptors are in
non-blocking mode and every operation first tries the system call directly (``recv_into``,
``send``, ``os.readv``, ``os.write``); only on ``EAGAIN`` does it wait, with
``trio.lowlevel.wait_readable``/``wait_writable`` inside the deadline's scope. This is libdill's
deadline rule (``IMMEDIATE`` does what it can without waiting) and it is also the fast path:
when data is already there, no cancel scope is built and the task does not go back through
Trio's scheduler more than once. Every public call is a full Trio checkpoint (cancellation is
checked on entry, and the task yields once: in the wait if it waited, else at the end), so a
stream that is always ready cannot starve other tasks. A layer that owns the transport calls the
underscore methods with ``checkpoint=False`` and checkpoints once per *its own* call: that is
how TLS moves many records per scheduler round trip.

Any other Trio stream (``trio.testing.memory_stream_pair``, a ``trio.SSLStream``...) is adapted
by :class:`StreamTransport`; waiting is then done by that stream, so ``IMMEDIATE`` on it is
best effort. A ``trio.SocketStream`` is not adapted but taken apart: its file descriptor moves
into a :class:`SocketTransport`, which is faster and makes the old object unusable, as libdill's
ownership rule asks.

Directions: a send interrupted after some bytes went out (deadline, cancel) leaves the peer
mid-message, so the send direction is then broken for good (:class:`ConnectionBroken`); a
receive that was only waiting loses nothing and the stream stays usable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Final, TypeVar, final

import trio

from ._base import (
    ByteStream,
    ConflictDetector,
    Handle,
    Kind,
    StackAttribute,
    TypedAttribute,
    as_writable_view,
    check_max_bytes,
    close_shielded,
)
from ._deadline import FOREVER, check_deadline, waiting
from ._errors import (
    BadHandle,
    ConnectionBroken,
    InvalidArgument,
    InvalidArgumentType,
    NotSupported,
    ProtocolMismatch,
    SendAfterDone,
    StackError,
)

__all__ = [
    "FdTransport",
    "PipeTransport",
    "SocketTransport",
    "StreamTransport",
    "begin_attach",
    "wrap_stream",
]

DEFAULT_RECEIVE_SIZE: Final = 65536
T = TypeVar("T")
_SOCK_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux only

_BROKEN_ERRNOS: Final = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT, errno.ENOTCONN}
)


def translate_os_error(exc: OSError, what: str) -> OSError:
    """Map an OS error from a transport to the errno table (others pass through untouched)."""
    if exc.errno in _BROKEN_ERRNOS:
        return ConnectionBroken(f"{what}: {exc.strerror}")
    if exc.errno == errno.EBADF:
        return BadHandle(f"{what}: the file descriptor was closed")
    return exc


def bytes_view(data: Any) -> memoryview:
    """A flat byte view of bytes-like ``data``; EINVAL for anything else (e.g. ``str``)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise InvalidArgumentType(f"data must be bytes-like, not {type(data).__name__}") from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class FdTransport(ByteStream):
    """The shared engine of socket and pipe transports (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._send_conflict = ConflictDetector("another task is already sending on this stream")
        self._receive_conflict = ConflictDetector(
            "another task is already receiving on this stream"
        )
        self._send_done = False
        self._send_broken = False
        self._send_begun = False  # _send_nowait sent part of a write whose rest is owed

    # What a subclass supplies: non-blocking primitives (raise BlockingIOError when not ready)
    # and the objects trio.lowlevel waits on.
    _read_waitable: Any
    _write_waitable: Any

    @abstractmethod
    def _recv_into_now(self, view: memoryview) -> int: ...

    @abstractmethod
    def _recv_now(self, max_bytes: int) -> bytes: ...

    @abstractmethod
    def _send_now(self, view: bytes | memoryview) -> int: ...

    @abstractmethod
    def _shutdown_write(self) -> None: ...

    @abstractmethod
    def _close_fds(self) -> None: ...

    # --- receive ------------------------------------------------------------------------------

    async def _receive(
        self, attempt: Callable[[], T], pushback: Callable[[], T], deadline: float, checkpoint: bool
    ) -> T:
        """The one receive loop: pushed-back bytes, else try now, else wait and try again."""
        checked = check_deadline(deadline)
        with self._receive_conflict:
            if checkpoint:
                await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            if self._pushback:
                result = pushback()
            else:
                while True:
                    try:
                        result = attempt()
                        break
                    except BlockingIOError:
                        waited = True
                        with waiting(checked, "receive"):
                            await self._wait_readable()
                    except OSError as exc:
                        raise translate_os_error(exc, "receive") from exc
            if checkpoint and not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return result

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        view = as_writable_view(buffer)
        return await self._receive(
            partial(self._recv_into_now, view),
            partial(self._take_pushback_into, view),
            deadline,
            checkpoint,
        )

    def _receive_nowait(self, view: memoryview) -> int | None:
        if self._pushback:
            return self._take_pushback_into(view)
        try:
            return self._recv_into_now(view)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise translate_os_error(exc, "receive") from exc

    def _send_nowait(self, data: bytes) -> int:
        self._check_send()
        try:
            sent = self._send_now(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise translate_os_error(exc, "send") from exc
        # A part sent: the owner sends the rest next, and an interruption then leaves the peer
        # with a cut write, so _send_all counts it as begun.
        self._send_begun = sent < len(data)
        return sent

    async def _send_on_close(self, data: bytes) -> None:
        if self._send_done or self._send_broken:
            return
        try:
            sent = self._send_nowait(data)
        except OSError:  # translated or not: a last word lost costs the peer a clean close
            sent = 0
        if sent < len(data):
            self._send_broken = True

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        return await self._receive(
            partial(self._recv_now, size), partial(self._take_pushback, size), deadline, True
        )

    async def _wait_receivable(self, deadline: float) -> bool:
        if not self._pushback:
            with waiting(deadline, "receive"):
                await self._wait_readable()
        return True

    async def _wait_readable(self) -> None:
        try:
            await trio.lowlevel.wait_readable(self._read_waitable)
        except trio.ClosedResourceError:
            raise BadHandle("the stream was closed while receiving") from None

    # --- send ---------------------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._send_done:
            raise SendAfterDone("send after send_eof()")
        if self._send_broken:
            raise ConnectionBroken("an earlier send was interrupted part-way")

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        checked = check_deadline(deadline)
        with self._send_conflict:
            self._check_send()
            if checkpoint:
                await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            with bytes_view(data) as view:
                total = len(view)
                sent = 0
                try:
                    while sent < total:
                        try:
                            sent += self._send_now(view[sent:])
                        except BlockingIOError:
                            waited = True
                            with waiting(checked, "send"):
                                await self._wait_writable()
                        except OSError as exc:
                            raise translate_os_error(exc, "send") from exc
                except BaseException:
                    if sent or self._send_begun:
                        self._send_broken = True
                    raise
                finally:
                    self._send_begun = False
            if checkpoint and not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def _wait_writable(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self._write_waitable)
        except trio.ClosedResourceError:
            raise BadHandle("the stream was closed while sending") from None

    async def _wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            self._check_send()
            await self._wait_writable()

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        check_deadline(deadline)
        with self._send_conflict:
            await trio.lowlevel.checkpoint()
            if self._send_done:
                return
            self._send_done = True
            try:
                self._shutdown_write()
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:  # the peer is gone already: nothing to tell it
                    raise translate_os_error(exc, "send_eof") from exc

    # --- close --------------------------------------------------------------------------------

    async def _close_resources(self) -> None:
        # notify_closing wakes any task waiting on the fd with ClosedResourceError.
        for waitable in {self._read_waitable, self._write_waitable}:
            if not isinstance(waitable, int) or waitable >= 0:
                trio.lowlevel.notify_closing(waitable)
        self._close_fds()
        await trio.lowlevel.checkpoint()


@final
class SocketTransport(FdTransport):
    """A connected stream socket (TCP or Unix) as a stack's bottom layer.

    Build one with :func:`open_tcp`, :func:`open_unix`, :func:`socketpair`, or from a
    ``trio.SocketStream`` with :func:`wrap_stream`; or hand it a connected stdlib socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        if sock.type != socket.SOCK_STREAM:
            raise InvalidArgument("SocketTransport needs a SOCK_STREAM socket")
        if sock.gettimeout() != 0.0:  # 0.0: non-blocking already
            sock.setblocking(False)
        self.socket = sock
        self._read_waitable = self._write_waitable = sock
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self._name = "tcp"
            with contextlib.suppress(OSError):  # e.g. a socket already shut down
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self._name = "unix"

    def label(self) -> str:
        return self._name

    def _recv_into_now(self, view: memoryview) -> int:
        return self.socket.recv_into(view)

    def _recv_now(self, max_bytes: int) -> bytes:
        return self.socket.recv(max_bytes)

    def _send_now(self, view: bytes | memoryview) -> int:
        return self.socket.send(view)

    def _shutdown_write(self) -> None:
        self.socket.shutdown(socket.SHUT_WR)

    def _close_fds(self) -> None:
        self.socket.close()

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return self.socket.fileno()

    def _attributes(self) -> Mapping[TypedAttribute[Any], Any]:
        return {
            StackAttribute.transport: lambda: self._name,
            StackAttribute.local_address: self.socket.getsockname,
            StackAttribute.remote_address: self.socket.getpeername,
        }


@final
class PipeTransport(FdTransport):
    """A bidirectional stream made of a read fd and a write fd (pipes, a child's stdio).

    ``send_eof`` closes the write end, which is how a pipe half-closes. The fds are put in
    non-blocking mode; with ``close_fds=False`` they stay open after ``aclose`` (stdin/stdout).
    """

    def __init__(self, read_fd: int, write_fd: int, *, close_fds: bool = True) -> None:
        super().__init__()
        for fd in (read_fd, write_fd):
            if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
                raise InvalidArgument(f"a file descriptor must be an int >= 0, not {fd!r}")
            os.set_blocking(fd, False)
        self._read_waitable = read_fd
        self._write_waitable = write_fd
        self._close_on_aclose = close_fds

    def label(self) -> str:
        return "pipe"

    def _recv_into_now(self, view: memoryview) -> int:
        return os.readv(self._read_waitable, (view,))

    def _recv_now(self, max_bytes: int) -> bytes:
        return os.read(self._read_waitable, max_bytes)

    def _send_now(self, view: bytes | memoryview) -> int:
        return os.write(self._write_waitable, view)

    def _shutdown_write(self) -> None:
        fd, self._write_waitable = self._write_waitable, -1
        trio.lowlevel.notify_closing(fd)
        if self._close_on_aclose:
            os.close(fd)

    def _close_fds(self) -> None:
        if not self._close_on_aclose:
            return
        for fd in {self._read_waitable, self._write_waitable}:
            if fd >= 0:
                os.close(fd)
        self._read_waitable = self._write_waitable = -1

    def _attributes(self) -> Mapping[TypedAttribute[Any], Any]:
        return {
            StackAttribute.transport: lambda: "pipe",
            StackAttribute.local_address: lambda: None,
            StackAttribute.remote_address: lambda: None,
        }


@contextlib.contextmanager
def _stream_errors(what: str) -> Iterator[None]:
    """Trio's stream errors from a wrapped stream, as the errno table's (EBADF, ECONNRESET)."""
    try:
        yield
    except StackError:
        raise
    except trio.ClosedResourceError as exc:
        raise BadHandle(f"{what}: {str(exc) or 'the stream was closed'}") from exc
    except trio.BrokenResourceError as exc:
        raise ConnectionBroken(f"{what}: {str(exc) or 'the stream is broken'}") from exc


@final
class StreamTransport(ByteStream):
    """Any ``trio.abc.Stream`` adapted to the stack (memory streams, a foreign TLS stream...).

    Waiting happens inside the wrapped stream, so ``IMMEDIATE`` is best effort here; prefer
    the socket and pipe transports where you can. ``send_eof`` needs a ``HalfCloseableStream``.
    """

    def __init__(self, stream: trio.abc.Stream, name: str = "stream") -> None:
        super().__init__()
        self.stream = stream
        self._name = name
        self._send_done = False
        self._send_broken = False

    def label(self) -> str:
        return self._name

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = FOREVER) -> bytes:
        size = check_max_bytes(max_bytes, DEFAULT_RECEIVE_SIZE)
        checked = check_deadline(deadline)
        if self._pushback:
            await trio.lowlevel.checkpoint()
            return self._take_pushback(size)
        with _stream_errors("receive"), waiting(checked, "receive"):
            return bytes(await self.stream.receive_some(size))

    async def _receive_into(
        self, buffer: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> int:
        view = as_writable_view(buffer)
        data = await self._receive_some(len(view), deadline)
        view[: len(data)] = data
        return len(data)

    async def _send_all(
        self, data: Any, deadline: float = FOREVER, checkpoint: bool = True
    ) -> None:
        checked = check_deadline(deadline)
        if self._send_done:
            raise SendAfterDone("send after send_eof()")
        if self._send_broken:
            raise ConnectionBroken("an earlier send was interrupted part-way")
        with bytes_view(data) as view:
            try:
                with _stream_errors("send"), waiting(checked, "send"):
                    await self.stream.send_all(view)
            except (trio.Cancelled, trio.TooSlowError):
                self._send_broken = bool(view)  # unknown how much went out
                raise

    async def _wait_send_all_might_not_block(self) -> None:
        with _stream_errors("send"):
            await self.stream.wait_send_all_might_not_block()

    async def _send_eof(self, deadline: float = FOREVER) -> None:
        checked = check_deadline(deadline)
        if not isinstance(self.stream, trio.abc.HalfCloseableStream):
            raise NotSupported(f"{type(self.stream).__name__} cannot half-close")
        if self._send_done:
            await trio.lowlevel.checkpoint()
            return
        with _stream_errors("send_eof"), waiting(checked, "send_eof"):
            await self.stream.send_eof()
        self._send_done = True

    async def _close_resources(self) -> None:
        await self.stream.aclose()

    def _attributes(self) -> Mapping[TypedAttribute[Any], Any]:
        return {StackAttribute.transport: lambda: self._name}


# --- constructors -----------------------------------------------------------------------------


def wrap_stream(stream: Any) -> Handle:
    """Make ``stream`` the bottom of a stack (or return it as it is if it is already ours).

    A ``trio.SocketStream`` becomes a :class:`SocketTransport` that takes over its socket (the
    old object must not be used again); any other ``trio.abc.Stream`` is adapted by
    :class:`StreamTransport`. Anything else is :class:`InvalidArgument`.
    """
    if isinstance(stream, Handle):
        return stream
    if isinstance(stream, trio.SocketStream):
        tsock = stream.socket
        # Trio keeps its sockets non-blocking: SOCK_NONBLOCK tells the new socket object so
        # (timeout 0) without another system call (SocketTransport skips its setblocking).
        kind = tsock.type | _SOCK_NONBLOCK
        sock = socket.socket(tsock.family, kind, tsock.proto, fileno=tsock.detach())
        return SocketTransport(sock)
    if isinstance(stream, trio.abc.Stream):
        return StreamTransport(stream)
    raise InvalidArgument(f"not a stream: {type(stream).__name__}")


async def begin_attach(stream: Any, kind: Kind, layer_name: str) -> Handle:
    """What every layer's ``attach`` does first: adopt ``stream`` and check its kind.

    A stream of the wrong kind is closed, then :class:`ProtocolMismatch` (EPROTO) is raised, as
    libdill does. A handle that is closed or owned by another layer is :class:`BadHandle` and is
    left alone (it is not the caller's to give).
    """
    handle = wrap_stream(stream)
    handle._check()
    if handle.kind is not kind:
        await close_shielded(handle)
        raise ProtocolMismatch(
            f"{layer_name} attaches to a {kind.value} stream; {handle.label()} is a "
            f"{handle.kind.value} stream"
        )
    return handle
