"""What a TLS connection tells about itself: ``trio.SSLStream``'s names and typed attributes.

:class:`TLSInfo` is a mixin of :class:`~trio_tlsattach._tls.TLSStream`. It only reads the
``ssl.SSLObject`` and the settings the stream was made with, never the wire, so none of it
waits. The methods ``trio.SSLStream`` forwards to ``ssl.SSLObject`` behave as there: those that
only mean something once the handshake is done (``version()``, ``cipher()``,
``get_channel_binding()``...) raise :class:`trio.NeedHandshakeError` before it, so code written
for trio.SSLStream sees the same error. This package's own names (:attr:`TLSInfo.tls_version`,
:attr:`TLSInfo.alpn`, :attr:`TLSInfo.peer_cert` and the typed attributes) are None instead.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ._base import TLSAttribute, TypedAttribute
from ._tlswire import _HANDSHOOK

__all__ = ["TLSInfo"]


class TLSInfo:
    """The accessors of :class:`TLSStream` that ``trio.SSLStream`` users know, and the
    :class:`TLSAttribute` values it provides to every layer above it."""

    __slots__ = ()

    # Set by TLSStream.__init__ (and the byte-stream base).
    _ssl: ssl.SSLObject
    _server_side: bool
    _pushback: bytearray
    _flags: int

    def _handshaken(self, name: str) -> ssl.SSLObject:
        """The ``SSLObject``, for a method that needs the handshake done (trio.SSLStream's
        ``_after_handshake`` list); :class:`trio.NeedHandshakeError` before it."""
        if not self._flags & _HANDSHOOK:
            raise trio.NeedHandshakeError(f"call do_handshake() before calling {name!r}")
        return self._ssl

    @property
    def context(self) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` of this connection.

        Settable, as on ``ssl.SSLObject``: a server's SNI callback can switch a connection to
        the context of the name the client asked for.
        """
        return self._ssl.context

    @context.setter
    def context(self, context: ssl.SSLContext) -> None:
        self._ssl.context = context

    @property
    def server_side(self) -> bool:
        """True for the server end."""
        return self._server_side

    @property
    def server_hostname(self) -> str | None:
        """The client's SNI name on the server side; the expected hostname on the client side."""
        if self._server_side:
            return getattr(self._ssl, "tlsattach_sni", None)
        return self._ssl.server_hostname

    @property
    def tls_version(self) -> str | None:
        """``"TLSv1.3"``, ``"TLSv1.2"``, or None before the handshake."""
        return self._ssl.version()

    @property
    def alpn(self) -> str | None:
        """The negotiated ALPN protocol, or None."""
        return self._ssl.selected_alpn_protocol()

    @property
    def peer_cert(self) -> dict[str, Any] | None:
        """The peer's verified certificate as ``getpeercert()`` gives it, or None."""
        return self._ssl.getpeercert() or None

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, to resume it with ``TLSClientLayer(..., session=...)``.

        A client may also set it before the handshake, as on ``ssl.SSLObject``.
        """
        return self._ssl.session

    @session.setter
    def session(self, session: ssl.SSLSession | None) -> None:
        self._ssl.session = session

    @property
    def session_reused(self) -> bool:
        """True when this connection resumed an earlier session (after the handshake)."""
        return self._handshaken("session_reused").session_reused

    def getpeercert(self, binary_form: bool = False) -> Any:
        """As ``ssl.SSLObject.getpeercert``."""
        return self._handshaken("getpeercert").getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        """As ``ssl.SSLObject.selected_alpn_protocol``."""
        return self._handshaken("selected_alpn_protocol").selected_alpn_protocol()

    def version(self) -> str | None:
        """As ``ssl.SSLObject.version``."""
        return self._handshaken("version").version()

    def cipher(self) -> tuple[str, str, int] | None:
        """As ``ssl.SSLObject.cipher``: (name, protocol, secret bits)."""
        return self._handshaken("cipher").cipher()

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """As ``ssl.SSLObject.get_channel_binding``: for channel-bound authentication
        (SCRAM-PLUS)."""
        return self._handshaken("get_channel_binding").get_channel_binding(cb_type)

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        """As ``ssl.SSLObject.shared_ciphers``: the ciphers both ends offered (server side)."""
        return self._handshaken("shared_ciphers").shared_ciphers()

    def compression(self) -> str | None:
        """As ``ssl.SSLObject.compression``: always None with OpenSSL 1.1 and later."""
        return self._handshaken("compression").compression()

    def selected_npn_protocol(self) -> str | None:
        """As ``ssl.SSLObject.selected_npn_protocol``: deprecated, always None (OpenSSL 3 has
        no NPN; ALPN replaced it, see :attr:`alpn`)."""
        self._handshaken("selected_npn_protocol")
        warnings.warn("ssl NPN is deprecated, use ALPN instead", DeprecationWarning, stacklevel=2)
        return None

    def pending(self) -> int:
        """Decrypted bytes a receive can return without reading from the stream below."""
        return self._ssl.pending() + len(self._pushback)

    def verify_client_post_handshake(self) -> None:
        """As ``ssl.SSLObject.verify_client_post_handshake``: a TLS 1.3 server asks for the
        client's certificate after the handshake; the request leaves with the next send."""
        self._ssl.verify_client_post_handshake()

    def _attributes(self) -> Mapping[TypedAttribute[Any], Callable[[], Any]]:
        return {
            TLSAttribute.tls_version: self._ssl.version,
            TLSAttribute.cipher: self._ssl.cipher,
            TLSAttribute.alpn: self._ssl.selected_alpn_protocol,
            TLSAttribute.peer_cert: lambda: self.peer_cert,
            TLSAttribute.peer_cert_der: lambda: self._ssl.getpeercert(True),
            TLSAttribute.server_hostname: lambda: self.server_hostname,
            TLSAttribute.server_side: lambda: self._server_side,
            TLSAttribute.session_reused: lambda: self._ssl.session_reused,
        }
