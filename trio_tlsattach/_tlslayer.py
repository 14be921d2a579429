"""The TLS layers (the recipes ``ProtocolStack.push`` takes) and libdill's ``tls_*`` functions.

Theory of operation
-------------------
:class:`TLSServerLayer` and :class:`TLSClientLayer` are immutable recipes: certificate sources
and parameters are checked once, when the layer is made (EINVAL then), and turned into a cached
``ssl.SSLContext`` (``_tlsconfig``). ``attach`` takes ownership of the stream below, runs the
handshake under the deadline and returns the :class:`~trio_tlsattach.TLSStream`; like libdill,
a failed attach closes the stream it was given. A client layer keeps the last resumable session
it saw (``session_cache``), so the next attach resumes. The ``tls_*`` functions at the bottom are
libdill's API, one line each over the layers.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar, final

import trustme

from ._base import ByteStream, Kind, close_shielded
from ._deadline import FOREVER, check_deadline
from ._errors import InvalidArgument, NotSupported, StackError
from ._mem import StateBlockPool
from ._tls import TLSStream
from ._tlsconfig import CertSource, client_context, server_context
from ._transports import begin_attach, wrap_stream

__all__ = [
    "TLSClientLayer",
    "TLSServerLayer",
    "tls_attach_client",
    "tls_attach_client_mem",
    "tls_attach_server",
    "tls_attach_server_mem",
    "tls_detach",
    "tls_done",
]

_L = TypeVar("_L", "TLSServerLayer", "TLSClientLayer")

# --- layers -----------------------------------------------------------------------------------


def _claim_block(mem: object, pool: StateBlockPool | None) -> object:
    if mem is not None and pool is not None:
        raise InvalidArgument("give a layer mem or pool, not both")
    return pool.acquire() if pool is not None else mem


async def _attach(
    stream: Any,
    context: ssl.SSLContext,
    deadline: float,
    *,
    server_side: bool,
    server_hostname: str | None,
    mem: object,
    pool: StateBlockPool | None,
    session: ssl.SSLSession | None,
    session_sink: Callable[[ssl.SSLSession], None] | None = None,
) -> TLSStream:
    below = await begin_attach(stream, Kind.BYTES, "tls")
    try:
        checked = check_deadline(deadline)
        tls = TLSStream(
            below,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            mem=_claim_block(mem, pool),
            session=session,
        )
        tls._session_sink = session_sink
        tls._dropin = False  # libdill's contract: forceful aclose, the stream below owned
    except BaseException:
        await close_shielded(below)
        raise
    try:
        await tls._handshake(checked)
    except BaseException:
        await close_shielded(tls)
        raise
    return tls


@final
class TLSServerLayer:
    """Server-side TLS, ready to attach to byte streams (one recipe, many connections).

    ``cert`` is an ``ssl.SSLContext``, a PEM file path (with ``key``, or a file holding both),
    PEM bytes, or a ``trustme.LeafCert``. Contexts built here are cached and require TLS 1.2+.

    ``mem``: a block of at least ``TLS_SIZE`` bytes for *one* connection's state;
    ``pool``: a :class:`StateBlockPool` to take a block from per connection (ENOMEM when empty).

    >>> layer = TLSServerLayer(server_cert)            # a trustme.LeafCert
    >>> tls = await layer.attach(tcp, deadline=after(10))
    """

    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        cert: CertSource,
        key: str | bytes | os.PathLike[str] | None = None,
        *,
        mem: object = None,
        pool: StateBlockPool | None = None,
        alpn: Sequence[str] | None = None,
    ) -> None:
        if mem is not None and pool is not None:
            raise InvalidArgument("give a layer mem or pool, not both")
        self.context = server_context(cert, key, alpn)
        self._mem = mem
        self._pool = pool

    async def attach(self, stream: Any, deadline: float = FOREVER) -> TLSStream:
        """Run the server handshake on ``stream``; on failure ``stream`` is closed."""
        return await _attach(
            stream, self.context, deadline, server_side=True, server_hostname=None,
            mem=self._mem, pool=self._pool, session=None,
        )  # fmt: skip

    def __repr__(self) -> str:
        return "<TLSServerLayer>"


@final
class TLSClientLayer:
    """Client-side TLS, ready to attach to byte streams.

    ``context``: an ``ssl.SSLContext``; a ``trustme.CA`` or CA file to trust; or None for the
    system's CAs. The server's certificate and ``server_hostname`` are verified unless your
    own context says otherwise. ``session`` resumes an earlier ``TLSStream.session``.

    ``session_cache`` (on by default): the layer remembers the last resumable session its
    connections got and offers it on the next ``attach``, so reusing one layer object for many
    connections to the same server makes later handshakes resumptions (no certificate
    exchange, a fraction of the CPU). TLS 1.3 tickets arrive after the handshake; a connection
    hands its session to the cache when it is detached or closed. ``session=`` takes precedence.
    """

    below_kind: Final = Kind.BYTES

    def __init__(
        self,
        context: ssl.SSLContext | trustme.CA | str | os.PathLike[str] | None = None,
        *,
        server_hostname: str | None = None,
        mem: object = None,
        pool: StateBlockPool | None = None,
        alpn: Sequence[str] | None = None,
        session: ssl.SSLSession | None = None,
        session_cache: bool = True,
    ) -> None:
        if mem is not None and pool is not None:
            raise InvalidArgument("give a layer mem or pool, not both")
        self.context = client_context(context, alpn)
        self.session_cache = session_cache
        self.cached_session: ssl.SSLSession | None = None
        """The session the next ``attach`` offers when ``session`` is not given."""
        if server_hostname is None and self.context.check_hostname:
            raise InvalidArgument("server_hostname is required when the context checks hostnames")
        self.server_hostname = server_hostname
        self.session = session
        self._mem = mem
        self._pool = pool

    async def attach(self, stream: Any, deadline: float = FOREVER) -> TLSStream:
        """Run the client handshake on ``stream``; on failure ``stream`` is closed."""
        return await _attach(
            stream, self.context, deadline, server_side=False,
            server_hostname=self.server_hostname, mem=self._mem, pool=self._pool,
            session=self.session or self.cached_session,
            session_sink=self._remember if self.session_cache else None,
        )  # fmt: skip

    def _remember(self, session: ssl.SSLSession) -> None:
        self.cached_session = session

    def __repr__(self) -> str:
        return f"<TLSClientLayer {self.server_hostname}>"


# --- libdill facade ---------------------------------------------------------------------------


async def _close_given(s: Any) -> None:
    """A failed libdill-style attach closes the stream it was given, as the layers' ``attach``
    does (a handle that is closed or owned by a layer is not the caller's: left alone)."""
    with contextlib.suppress(StackError):
        handle = wrap_stream(s)
        handle._check()
        await close_shielded(handle)


async def _build_and_attach(s: Any, build: Callable[[], _L], deadline: float) -> TLSStream:
    # Bad arguments (a certificate that does not load, a bad ALPN list...) are found while
    # building the layer, before ``attach`` runs: ``s`` must be closed then too.
    try:
        layer = build()
    except BaseException:
        await _close_given(s)
        raise
    return await layer.attach(s, deadline)


async def _need_mem(s: Any, mem: object, function: str) -> None:
    if mem is None:
        await _close_given(s)
        raise InvalidArgument(f"{function} needs a memory block (see TLS_SIZE)")


async def tls_attach_server(
    s: Any, cert: CertSource, key: str | bytes | os.PathLike[str] | None, deadline: float = FOREVER
) -> TLSStream:
    """libdill's ``tls_attach_server(s, cert, key, deadline)``."""
    return await _build_and_attach(s, lambda: TLSServerLayer(cert, key), deadline)


async def tls_attach_server_mem(
    s: Any,
    cert: CertSource,
    key: str | bytes | os.PathLike[str] | None,
    mem: object,
    deadline: float = FOREVER,
) -> TLSStream:
    """libdill's ``tls_attach_server_mem``: state kept in ``mem`` (>= ``TLS_SIZE`` bytes).

    ::

        mem = bytearray(TLS_SIZE)
        tls = await tls_attach_server_mem(tcp, "cert.pem", "key.pem", mem, after(10))
        await tls.send_all(b"ABC")
        tcp = await tls_detach(tls, after(10))
    """
    await _need_mem(s, mem, "tls_attach_server_mem")
    return await _build_and_attach(s, lambda: TLSServerLayer(cert, key, mem=mem), deadline)


async def tls_attach_client(
    s: Any,
    deadline: float = FOREVER,
    *,
    context: ssl.SSLContext | trustme.CA | str | None = None,
    server_hostname: str | None = None,
    alpn: Sequence[str] | None = None,
    session: ssl.SSLSession | None = None,
) -> TLSStream:
    """libdill's ``tls_attach_client(s, deadline)``, with the verification settings as keywords."""

    def build() -> TLSClientLayer:
        return TLSClientLayer(context, server_hostname=server_hostname, alpn=alpn, session=session)

    return await _build_and_attach(s, build, deadline)


async def tls_attach_client_mem(
    s: Any,
    mem: object,
    deadline: float = FOREVER,
    *,
    context: ssl.SSLContext | trustme.CA | str | None = None,
    server_hostname: str | None = None,
    alpn: Sequence[str] | None = None,
    session: ssl.SSLSession | None = None,
) -> TLSStream:
    """libdill's ``tls_attach_client_mem(s, mem, deadline)``."""
    await _need_mem(s, mem, "tls_attach_client_mem")

    def build() -> TLSClientLayer:
        return TLSClientLayer(
            context, server_hostname=server_hostname, alpn=alpn, session=session, mem=mem
        )

    return await _build_and_attach(s, build, deadline)


def _tls(s: object) -> TLSStream:
    if not isinstance(s, TLSStream):
        raise NotSupported(f"not a TLS stream: {type(s).__name__}")
    return s


async def tls_done(s: TLSStream, deadline: float = FOREVER) -> None:
    """libdill's ``tls_done``: send close_notify; receiving continues."""
    await _tls(s).send_eof(deadline)


async def tls_detach(s: TLSStream, deadline: float = FOREVER) -> ByteStream:
    """libdill's ``tls_detach``: clean TLS shutdown; returns the underlying stream."""
    return await _tls(s).detach(deadline)
