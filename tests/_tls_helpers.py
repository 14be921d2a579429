"""Helpers shared by the TLS tests that put hand-made ciphertext on the wire."""

from __future__ import annotations

import trio_tlsattach as ta


def seal(tls: ta.TLSStream, plaintext: bytes) -> bytes:
    """The TLS records ``tls`` would send for ``plaintext``, made but not sent.

    For tests that cut, corrupt or hold back ciphertext before handing it to the stream below.
    """
    tls._ssl.write(plaintext)
    return tls._outgoing.read()
