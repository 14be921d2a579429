"""Typed attributes: what a handle tells about itself, found through the whole stack.

Theory of operation
-------------------
anyio's idea: a :class:`TypedAttribute` is a key whose type says what its value is, and
``handle.extra(key)`` looks it up on the handle and then on every handle below it, so the top of
a stack answers for all of it (``stack.top.extra(TLSAttribute.alpn)`` works however many layers
sit above TLS). Each layer offers its own keys through ``Handle._attributes``; the keys every
transport and the TLS layer provide are grouped here, in :class:`StackAttribute` and
:class:`TLSAttribute`. This module imports nothing of the package (contract level).
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar, final

__all__ = ["StackAttribute", "TLSAttribute", "TypedAttribute", "describe"]

T = TypeVar("T")


@final
class TypedAttribute(Generic[T]):
    """A key for :meth:`Handle.extra`, typed by what it returns (anyio's idea).

    >>> version = tls.extra(TLSAttribute.tls_version)          # "TLSv1.3"
    >>> alpn = stack.top.extra(TLSAttribute.alpn, None)         # found through any layers
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<TypedAttribute {self.name}>"


class StackAttribute:
    """Attributes every transport provides (sockets give addresses; pipes give ``None``)."""

    local_address: Final = TypedAttribute[Any]("local_address")
    remote_address: Final = TypedAttribute[Any]("remote_address")
    transport: Final = TypedAttribute[str]("transport")  # "tcp", "unix", "pipe", "memory"...


class TLSAttribute:
    """Attributes a TLS layer provides to itself and to every layer above it."""

    tls_version: Final = TypedAttribute[str | None]("tls_version")
    cipher: Final = TypedAttribute[tuple[str, str, int] | None]("cipher")
    alpn: Final = TypedAttribute[str | None]("alpn")
    peer_cert: Final = TypedAttribute[dict[str, Any] | None]("peer_cert")
    peer_cert_der: Final = TypedAttribute[bytes | None]("peer_cert_der")
    server_hostname: Final = TypedAttribute[str | None]("server_hostname")
    server_side: Final = TypedAttribute[bool]("server_side")
    session_reused: Final = TypedAttribute[bool]("session_reused")


def describe(address: Any) -> str:
    """A socket address (a ``StackAttribute`` value) for a log line: ``host:port``, IPv6 in
    brackets so that the port stays readable, a Unix path as it is, ``"-"`` for none."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address) if address else "-"
