"""Endpoints and the byte pump the ``tlsattach`` tunnel is made of.

Theory of operation
-------------------
An endpoint names a byte stream: ``tcp:HOST:PORT``, ``unix:PATH``, ``exec:COMMAND`` (a child
process's stdin/stdout), ``-`` (our own stdin/stdout), or the built-in ``echo``. ``parse_endpoint``
is pure and checked on the command line; ``open_endpoint`` makes the transport.

``pump`` copies both directions at once with one reusable buffer per direction
(``receive_into``: no bytes object per chunk), and propagates half-closes: when one side ends,
the other gets ``send_eof`` and the copy the other way goes on until it ends too. It counts the
bytes as they move (the connection's log line reports them, even after a shutdown cut it short)
and raises the first error of either direction as it is, never an exception group.

Two deadlines keep a stuck peer from holding a connection (and its state block) forever:
``open_endpoint`` takes an absolute ``deadline`` for a backend that does not accept, and
``pump`` and ``echo`` take an ``idle_timeout``, a duration re-armed each time bytes move either
way (one cancel scope whose deadline moves forward; a stalled write counts as idle too, since
nothing moves). Both end the connection with :class:`DeadlineExceeded`, which the tunnel logs
as that connection's one line.

When a connection fails (a backend that died, refused, or never answered; a deadline), the
tunnel does not end the client's side with a close_notify: that would tell the client the
stream ended where the sender meant it to, and a cut response would pass for a whole one.
:func:`reset` closes the TCP connection with a RST instead (what stunnel's ``reset = yes``
does), so the client sees an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from ._attributes import StackAttribute, describe
from ._base import ByteStream, Handle, close_shielded
from ._connect import open_pipe, open_tcp, open_unix
from ._deadline import FOREVER, check_deadline
from ._errors import DeadlineExceeded, InvalidArgument, NotSupported, StackError
from ._transports import StreamTransport

__all__ = [
    "STREAM_ERRORS",
    "Endpoint",
    "both_ways",
    "describe",
    "echo",
    "failure",
    "half_close",
    "idle_deadline",
    "open_endpoint",
    "parse_address",
    "parse_endpoint",
    "peer_of",
    "pump",
    "reset",
]

CHUNK = 65536


@final
@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: ``kind`` is tcp, unix, exec, stdio or echo."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    command: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "tcp":
            return f"tcp:{self.host}:{self.port}"
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "exec":
            return "exec:" + shlex.join(self.command)
        return "-" if self.kind == "stdio" else self.kind


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:443`` for IPv6) to a (host, port) pair; EINVAL when malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise InvalidArgument(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"port out of range: {port}")
    return host.strip("[]"), port


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``tcp:HOST:PORT``, ``unix:PATH``, ``exec:COMMAND``, ``-`` or ``echo``.

    >>> parse_endpoint("tcp:localhost:8080")
    Endpoint(kind='tcp', host='localhost', port=8080, path='', command=())
    """
    if text == "-":
        return Endpoint("stdio")
    if text == "echo":
        return Endpoint("echo")
    kind, sep, rest = text.partition(":")
    if sep and kind == "tcp":
        host, port = parse_address(rest)
        return Endpoint("tcp", host=host, port=port)
    if sep and kind == "unix" and rest:
        return Endpoint("unix", path=rest)
    if sep and kind == "exec":
        command = tuple(shlex.split(rest))
        if not command:
            raise InvalidArgument("exec: needs a command")
        return Endpoint("exec", command=command)
    raise InvalidArgument(
        f"unknown endpoint {text!r}: use tcp:HOST:PORT, unix:PATH, exec:COMMAND, - or echo"
    )


@final
class _ProcessStream(trio.abc.HalfCloseableStream):
    """A child process's stdin/stdout as one stream; closing it ends the child."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stdin.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stdin.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stdin.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self._stdout.receive_some(max_bytes))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stdin.aclose()
            await self._stdout.aclose()
            with trio.move_on_after(2):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


async def open_endpoint(endpoint: Endpoint, deadline: float = FOREVER) -> ByteStream:
    """Open the transport an endpoint names (not ``echo``: that one is served in place).

    :class:`DeadlineExceeded` when it is not open by ``deadline`` (a backend that never
    accepts: a full backlog, a firewall that drops).
    """
    with trio.move_on_at(check_deadline(deadline)):
        return await _open(endpoint)
    raise DeadlineExceeded(f"{endpoint} did not accept in time")


async def _open(endpoint: Endpoint) -> ByteStream:
    if endpoint.kind == "tcp":
        return await open_tcp(endpoint.host, endpoint.port)
    if endpoint.kind == "unix":
        return await open_unix(endpoint.path)
    if endpoint.kind == "stdio":
        return open_pipe(os.dup(0), os.dup(1))
    if endpoint.kind == "exec":
        process = await trio.lowlevel.open_process(
            list(endpoint.command), stdin=-1, stdout=-1
        )  # -1 is subprocess.PIPE
        return StreamTransport(_ProcessStream(process), "exec")
    raise NotSupported(f"cannot open endpoint {endpoint}")


STREAM_ERRORS: Final = (StackError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a connection can fail with: it ends that connection, never the server."""


@contextlib.contextmanager
def idle_deadline(seconds: float | None) -> Iterator[Callable[[], None]]:
    """Run the block until no byte moved for ``seconds`` (None or inf: no limit).

    Yields ``moved()``, to call whenever bytes move; it pushes the deadline forward. When the
    deadline passes, the block is cancelled and :class:`DeadlineExceeded` raised::

        with idle_deadline(600) as moved:
            while n := await stream.receive_into(buffer):
                moved()
    """
    if seconds is not None and not seconds > 0:
        raise InvalidArgument(f"idle timeout must be a positive number of seconds, not {seconds}")
    limit = math.inf if seconds is None else seconds
    with trio.CancelScope() as scope:

        def moved() -> None:
            scope.deadline = trio.current_time() + limit

        moved()
        yield moved
    if scope.cancelled_caught:
        raise DeadlineExceeded(f"idle for {limit:g} s")


async def echo(
    stream: ByteStream, counts: list[int] | None = None, idle_timeout: float | None = None
) -> tuple[int, int]:
    """The built-in backend: send back what arrives; returns (bytes in, bytes out).

    ``counts`` (two ints), when given, is updated as bytes move, so a caller that is cancelled
    can still tell how much went through. ``idle_timeout``: see :func:`idle_deadline`.
    """
    counts = [0, 0] if counts is None else counts
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with idle_deadline(idle_timeout) as moved:
        while n := await stream.receive_into(buffer):
            counts[0] += n
            moved()
            await stream.send_all(view[:n])
            counts[1] += n
            moved()
        await stream.send_eof()
    return counts[0], counts[1]


async def _copy(
    source: ByteStream, sink: ByteStream, counts: list[int], index: int, moved: Callable[[], None]
) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while n := await source.receive_into(buffer):
        moved()
        await sink.send_all(view[:n])
        counts[index] += n
        moved()
    await half_close(sink)  # the other direction goes on


async def half_close(sink: ByteStream) -> None:
    """End what is sent to ``sink``: ``send_eof``, or a close where it cannot half-close."""
    try:
        await sink.send_eof()
    except NotSupported:
        await sink.aclose()


async def pump(
    a: ByteStream,
    b: ByteStream,
    counts: list[int] | None = None,
    idle_timeout: float | None = None,
) -> tuple[int, int]:
    """Copy a→b and b→a until both directions ended; returns (bytes a→b, bytes b→a).

    EOF on one side becomes ``send_eof`` on the other. If either direction fails (a reset, a
    TLS error), the other is cancelled and that first error is raised as it is (not in an
    exception group), so callers can catch :data:`STREAM_ERRORS`. ``counts`` as in :func:`echo`;
    ``idle_timeout`` (no byte either way for that long): see :func:`idle_deadline`.
    """
    counts = [0, 0] if counts is None else counts
    with idle_deadline(idle_timeout) as moved:
        await both_ways(
            lambda: _copy(a, b, counts, 0, moved), lambda: _copy(b, a, counts, 1, moved)
        )
    return counts[0], counts[1]


async def both_ways(
    first: Callable[[], Awaitable[object]], second: Callable[[], Awaitable[object]]
) -> None:
    """Run the two directions of a relay at once, until both have ended.

    If one fails with a stream error (a reset, a protocol error, a deadline), the other is
    cancelled and that first error is raised as it is, never inside an exception group, so a
    caller can catch :data:`STREAM_ERRORS` (``pump`` and the WebSocket relay use this).
    """
    failures: list[BaseException] = []
    async with trio.open_nursery() as nursery:

        async def run(direction: Callable[[], Awaitable[object]]) -> None:
            try:
                await direction()
            except STREAM_ERRORS as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(run, first)
        nursery.start_soon(run, second)
    if failures:
        raise failures[0]


def peer_of(stream: Handle) -> str:
    """The peer address of ``stream`` (found through any layers) for a log line, or ``"-"``.

    Read it when the connection starts: a socket the peer has reset no longer knows it.
    """
    try:
        return describe(stream.extra(StackAttribute.remote_address, None))
    except OSError:
        return "-"


def failure(exc: BaseException) -> str:
    """How a connection ended, for its log line: the reason, without the errno prefix."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"error: {reason or type(exc).__name__}"


_LINGER_RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


async def reset(stream: Any) -> None:
    """Close the connection under a TLS stream with no close_notify (a RST on TCP).

    The client learns the stream was cut (ECONNRESET, or an EOF without close_notify on a
    Unix socket or pipe) instead of a clean end. The TLS stream itself still has to be closed
    (that releases its state block); it then has nothing to send on.
    """
    below = stream.transport_stream
    if below is None:  # detached or closed already
        return
    sock = getattr(below, "socket", None)  # ours are stdlib sockets, trio's trio sockets
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    if isinstance(below, Handle):
        await close_shielded(below)
    else:
        with trio.CancelScope(shield=True):
            await below.aclose()
