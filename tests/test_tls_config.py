"""The server context cache behind ``tls_attach_server_mem(s, cert_path, key_path, ...)``.

A context is built once per certificate and key and reused, so an attach does not load and
parse the files; a renewed certificate is picked up on the next attach, and a file that has
gone is EINVAL at attach even when its context is still cached.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trio
import trustme

import trio_tlsattach as ta
from trio_tlsattach import _tlsconfig


def _write(directory: Path, leaf: trustme.LeafCert, name: str = "") -> tuple[str, str]:
    cert, key = directory / f"cert{name}.pem", directory / f"key{name}.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


async def _served_cert(tls_ca: trustme.CA, cert: str, key: str) -> bytes:
    """The certificate a client sees from ``tls_attach_server_mem`` with these files."""
    a, b = ta.socketpair()
    client_layer = ta.TLSClientLayer(tls_ca, server_hostname="localhost", session_cache=False)
    servers: list[ta.TLSStream] = []

    async def serve() -> None:
        mem = bytearray(ta.TLS_SIZE)
        servers.append(await ta.tls_attach_server_mem(a, cert, key, mem, ta.after(10)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        client = await client_layer.attach(b, ta.after(10))
    der = client.getpeercert(binary_form=True)
    await client.aclose()
    await servers[0].aclose()
    return bytes(der)


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


async def test_the_context_is_built_once_and_a_renewal_is_picked_up(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    first, renewed, again = (tls_ca.issue_cert("localhost") for _ in range(3))
    cert, key = _write(tmp_path, first)
    context = _tlsconfig.server_context(cert, key, None)
    assert _tlsconfig.server_context(cert, key, None) is context  # no load per attach
    assert await _served_cert(tls_ca, cert, key) == _der(first)
    # certbot's way: new files renamed over the old ones (new inodes).
    new_cert, new_key = _write(tmp_path, renewed, ".new")
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    assert await _served_cert(tls_ca, cert, key) == _der(renewed)
    # Rewritten in place: the same inode, a later modification time.
    stamp = os.stat(cert).st_mtime_ns
    _write(tmp_path, again)
    os.utime(cert, ns=(stamp + 10**9, stamp + 10**9))
    assert await _served_cert(tls_ca, cert, key) == _der(again)


async def test_a_cached_certificate_that_is_gone_is_einval_at_attach(
    tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    cert, key = _write(tmp_path, tls_server_cert)
    assert await _served_cert(tls_ca, cert, key) == _der(tls_server_cert)  # now cached
    for gone in (key, cert):
        os.rename(gone, gone + ".away")
        a, b = ta.socketpair()
        with pytest.raises(ta.InvalidArgument, match="cannot read") as info:
            await ta.tls_attach_server_mem(a, cert, key, bytearray(ta.TLS_SIZE), ta.after(10))
        assert info.value.errno == 22
        assert a.closed  # a failed attach closes the stream it was given, as libdill's
        await b.aclose()
        os.rename(gone + ".away", gone)


def test_the_cache_is_bounded(tmp_path: Path, tls_server_cert: trustme.LeafCert) -> None:
    cert, key = _write(tmp_path, tls_server_cert)
    for n in range(_tlsconfig._CACHE_LIMIT + 8):  # distinct configurations: ALPN names
        _tlsconfig.server_context(cert, key, [f"proto{n}"])
    assert len(_tlsconfig._cache) <= _tlsconfig._CACHE_LIMIT


def test_a_cache_hit_costs_one_stat_per_file(
    tmp_path: Path, tls_server_cert: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _write(tmp_path, tls_server_cert)
    context = _tlsconfig.server_context(cert, key, None)
    calls: list[str] = []
    real_stat, real_access = os.stat, os.access

    def stat(path: str) -> os.stat_result:
        calls.append("stat")
        return real_stat(path)

    def access(path: str, mode: int) -> bool:
        calls.append("access")
        return real_access(path, mode)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "access", access)
    assert _tlsconfig.server_context(cert, key, None) is context
    assert calls == ["stat", "stat"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
async def test_a_cached_certificate_made_unreadable_is_einval_at_attach(
    tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """chmod changes the file's change time: the cached context is not used, the file is
    checked again."""
    cert, key = _write(tmp_path, tls_server_cert)
    assert await _served_cert(tls_ca, cert, key) == _der(tls_server_cert)  # now cached
    os.chmod(key, 0)
    try:
        a, b = ta.socketpair()
        with pytest.raises(ta.InvalidArgument, match="cannot read"):
            await ta.tls_attach_server_mem(a, cert, key, bytearray(ta.TLS_SIZE), ta.after(10))
        assert a.closed
        await b.aclose()
    finally:
        os.chmod(key, 0o600)
