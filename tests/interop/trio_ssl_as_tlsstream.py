"""A pytest plugin that runs trio's own SSL tests with TLSStream in place of SSLStream.

Loaded with ``-p`` by ``test_trio_ssl_suite.py`` in a pytest of its own, so the swap never
touches the rest of our suite. trio's tests take ``SSLStream`` from ``trio._ssl`` when their
module is imported, ``trio.SSLListener`` looks the name up there on every accept, and
``trio.open_ssl_over_tcp_stream`` uses ``trio.SSLStream``: setting both here, before collection,
makes every stream those tests build a TLSStream.

The tests that check what TLSStream does differently on purpose are expected to fail (strict:
if one starts to pass, the table is out of date).
"""

from __future__ import annotations

import pytest
import trio._ssl

import trio_tlsattach

trio._ssl.SSLStream = trio_tlsattach.TLSStream  # type: ignore[misc, assignment]
trio.SSLStream = trio_tlsattach.TLSStream  # type: ignore[misc, assignment]

_FORCEFUL_CLOSE = "aclose is libdill's forceful hclose: it does not run a handshake not yet done"
_NONE_BEFORE_HANDSHAKE = "before the handshake the accessors return None, not NeedHandshakeError"

DIFFERENCES: dict[str, str] = {
    "test_attributes": "a trio.SocketStream's socket is taken over: transport_stream is ours",
    "test_closing_nice_case": _FORCEFUL_CLOSE,
    "test_ssl_handshake_failure_during_aclose": _FORCEFUL_CLOSE,
    "test_ssl_https_compatibility_disagreement": "the error's cause is not an ssl.SSLEOFError",
    "test_selected_alpn_protocol_before_handshake": _NONE_BEFORE_HANDSHAKE,
    "test_selected_npn_protocol_before_handshake": _NONE_BEFORE_HANDSHAKE,
    "test_get_channel_binding_before_handshake": _NONE_BEFORE_HANDSHAKE,
}
"""trio test name: why TLSStream differs there (see the TLSStream docstring)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = DIFFERENCES.get(getattr(item, "originalname", ""))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
