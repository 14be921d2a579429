"""Building the ``ssl.SSLContext`` a TLS layer uses, from whatever the caller has.

Theory of operation
-------------------
libdill takes a certificate file and a key file; Trio users usually have an ``ssl.SSLContext``,
and test suites have ``trustme`` objects. All of them end up as one ``SSLContext`` per distinct
configuration, built once and cached: loading a chain and parsing a key per connection costs
more than the handshake's own public-key operation. Cache keys are the file paths with the
files' identity (device, inode), modification and change times and size, taken by one
``stat`` per file and attach (no other system call on a hit): a renewed certificate
(rewritten in place, or a new file renamed over the old one, as certbot and ACME clients do)
is picked up on the next attach, and a file that is gone or unreadable is EINVAL then, even if
its context is cached. PEM bytes are keyed by their digest, ``trustme`` objects by identity.
The cache holds at most ``_CACHE_LIMIT`` contexts, the oldest going first (a renewal leaves
the old entry to age out).

Defaults are the secure ones: TLS 1.2 or newer, and a client verifies the server's certificate
and its hostname (``ssl.create_default_context``). Anything that cannot be loaded is
:class:`InvalidArgument` (EINVAL) with OpenSSL's reason attached as ``__cause__``.

Names are configuration too: :func:`encode_hostname` turns the name a client asks for into
what goes on the wire, and :func:`record_sni` lets a server see it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, Final

import idna
import trustme

from ._errors import InvalidArgument, InvalidArgumentType

__all__ = ["CertSource", "client_context", "encode_hostname", "record_sni", "server_context"]

CertSource = ssl.SSLContext | str | bytes | os.PathLike[str] | trustme.LeafCert
"""What a server layer accepts as its certificate: a context, a PEM file path, PEM bytes, or a
``trustme.LeafCert``."""

_cache: dict[object, ssl.SSLContext] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 64


SERVER_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL"
"""TLS 1.2 suites a server layer made from a certificate accepts: forward secret AEAD only
(Mozilla's "intermediate" profile: no CBC, no RSA key exchange). TLS 1.3's are all AEAD."""


def _new_context(purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if purpose is ssl.Purpose.CLIENT_AUTH:  # a server's context; clients keep Python's list
        ctx.set_ciphers(SERVER_CIPHERS)
    return ctx


def _file_key(path: str) -> tuple[str, int, int, int, int, int]:
    """What identifies the content of the file at ``path`` now, from one ``stat``; EINVAL if
    it is gone.

    The change time is part of it: ``chmod``, ``chown`` and ACL changes set it, so a file made
    unreadable since its context was cached misses the cache and is checked again
    (:func:`_check_readable`) before anything is loaded. The path is kept as given: the device
    and inode tell apart two files a relative path may name from different directories.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path!r}: {exc.strerror}") from exc
    return (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _check_readable(path: str | None) -> None:
    if path is not None and not os.access(path, os.R_OK):
        raise InvalidArgument(f"cannot read {path!r}: Permission denied")


def _refuse_password() -> bytes:
    raise InvalidArgument(
        "the private key is encrypted: load it into an ssl.SSLContext yourself "
        "(load_cert_chain(..., password=...)) and pass the context"
    )


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str | None) -> None:
    try:
        # Without a password callback OpenSSL would prompt for a pass phrase on the terminal,
        # blocking the whole event loop: an encrypted key is EINVAL instead.
        ctx.load_cert_chain(cert, key, password=_refuse_password)
    except InvalidArgument:
        raise
    except ssl.SSLError as exc:
        raise InvalidArgument(f"bad certificate or key: {exc.reason or exc}") from exc
    except OSError as exc:
        raise InvalidArgument(f"cannot load certificate/key: {exc.strerror or exc}") from exc


def _load_pem(ctx: ssl.SSLContext, cert: bytes, key: bytes | None) -> None:
    # The ssl module loads chains from files only; the temporary file lives for one load.
    with tempfile.NamedTemporaryFile(suffix=".pem") as f:
        f.write(cert)
        if key is not None:
            f.write(b"\n" + key)
        f.flush()
        _load_chain(ctx, f.name, None)


def _cached(key: object, build: functools.partial[ssl.SSLContext]) -> ssl.SSLContext:
    ctx = _cache.get(key)  # one dict lookup is atomic; the lock guards the eviction below
    if ctx is None:
        ctx = build()
        with _cache_lock:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.pop(next(iter(_cache)))
            _cache[key] = ctx
    return ctx


def _check_alpn(alpn: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate ALPN names once, before anything is cached (a str is not a list of names)."""
    if alpn is None:
        return None
    if isinstance(alpn, str | bytes) or not all(isinstance(p, str) and p for p in alpn):
        raise InvalidArgument("alpn must be a list of non-empty protocol names, e.g. ['h2']")
    return tuple(alpn)


def _alpn(ctx: ssl.SSLContext, alpn: tuple[str, ...] | None) -> None:
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))


def _build_server(cert: object, key: object, alpn: tuple[str, ...] | None) -> ssl.SSLContext:
    ctx = _new_context(ssl.Purpose.CLIENT_AUTH)
    if isinstance(cert, trustme.LeafCert):
        cert.configure_cert(ctx)
    elif isinstance(cert, bytes):
        _load_pem(ctx, cert, key if isinstance(key, bytes) else None)
    else:
        _check_readable(str(cert))
        _check_readable(None if key is None else str(key))
        _load_chain(ctx, str(cert), None if key is None else str(key))
    _alpn(ctx, alpn)
    return ctx


def server_context(
    cert: CertSource, key: str | bytes | os.PathLike[str] | None, alpn: Sequence[str] | None
) -> ssl.SSLContext:
    """The server context for ``cert``/``key``: the caller's own context, or a cached one.

    A context passed in is used as it is (``alpn``, when given, is set on it).
    """
    alpn_key = _check_alpn(alpn)
    if isinstance(cert, ssl.SSLContext):
        if key is not None:
            raise InvalidArgument("key is only taken with a certificate, not with an SSLContext")
        _alpn(cert, alpn_key)
        return cert
    if isinstance(cert, trustme.LeafCert):
        return _cached(
            ("leaf", cert, alpn_key), functools.partial(_build_server, cert, None, alpn_key)
        )
    if isinstance(cert, bytes):
        if key is not None and not isinstance(key, bytes):
            raise InvalidArgumentType("with PEM bytes as cert, key must be PEM bytes too")
        digest = hashlib.sha256(cert + b"\0" + (key or b"")).hexdigest()
        return _cached(
            ("pem", digest, alpn_key), functools.partial(_build_server, cert, key, alpn_key)
        )
    if isinstance(cert, str | os.PathLike):
        cert_path = os.fspath(cert)
        if key is not None and not isinstance(key, str | os.PathLike):
            raise InvalidArgumentType("with a certificate path, key must be a path too")
        key_path = None if key is None else os.fspath(key)
        cache_key = ("file", _file_key(cert_path), key_path and _file_key(key_path), alpn_key)
        return _cached(cache_key, functools.partial(_build_server, cert_path, key_path, alpn_key))
    raise InvalidArgumentType(
        "cert must be an ssl.SSLContext, a PEM file path, PEM bytes or a trustme.LeafCert, "
        f"not {type(cert).__name__}"
    )


def client_context(
    context: ssl.SSLContext | trustme.CA | str | os.PathLike[str] | None,
    alpn: Sequence[str] | None,
) -> ssl.SSLContext:
    """The client context: the caller's, or a cached verifying one trusting ``context``.

    ``None`` trusts the system's CAs; a ``trustme.CA`` or a CA file path trusts that CA only.
    """
    alpn_key = _check_alpn(alpn)
    if isinstance(context, ssl.SSLContext):
        _alpn(context, alpn_key)
        return context

    def build(trust: Any) -> ssl.SSLContext:
        ctx = _new_context(ssl.Purpose.SERVER_AUTH)
        if isinstance(trust, trustme.CA):
            trust.configure_trust(ctx)
        elif trust is not None:
            try:
                ctx.load_verify_locations(cafile=trust)
            except (ssl.SSLError, OSError) as exc:
                raise InvalidArgument(f"cannot load CA file {trust!r}: {exc}") from exc
        _alpn(ctx, alpn_key)
        return ctx

    if context is None:
        return _cached(("client-default", alpn_key), functools.partial(build, None))
    if isinstance(context, trustme.CA):
        return _cached(("client-ca", context, alpn_key), functools.partial(build, context))
    if isinstance(context, str | os.PathLike):
        path = os.fspath(context)
        return _cached(("client-file", _file_key(path), alpn_key), functools.partial(build, path))
    raise InvalidArgumentType(
        f"context must be an ssl.SSLContext, a trustme.CA or a CA file path, not "
        f"{type(context).__name__}"
    )


def encode_hostname(hostname: str | bytes | None) -> str | bytes | None:
    """IDNA 2008 (UTS 46), as trio does: Python's ``ssl`` would use IDNA 2003, which maps
    some names to a different host (``faß.de`` to ``fass.de``)."""
    if not isinstance(hostname, str) or hostname.isascii():
        return hostname
    try:
        return idna.encode(hostname, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidArgument(f"server_hostname {hostname!r} is not a valid name: {exc}") from exc


def record_sni(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    """The server's SNI callback unless the context has its own: the server side learns the
    name the client asked for only through it (``TLSStream.server_hostname`` reads it)."""
    sslobj.tlsattach_sni = server_name
