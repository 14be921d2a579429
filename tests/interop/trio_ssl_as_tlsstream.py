"""A pytest plugin that runs trio's own SSL tests with TLSStream in place of SSLStream.

Loaded with ``-p`` by ``test_trio_ssl_suite.py`` in a pytest of its own, so the swap never
touches the rest of our suite. trio's tests take ``SSLStream`` from ``trio._ssl`` when their
module is imported, ``trio.SSLListener`` looks the name up there on every accept, and
``trio.open_ssl_over_tcp_stream`` uses ``trio.SSLStream``: setting both here, before collection,
makes every stream those tests build a TLSStream.

A test listed in ``DIFFERENCES`` would be expected to fail (strict: if one starts to pass, the
table is out of date); the table is empty.
"""

from __future__ import annotations

import pytest
import trio._ssl

import trio_tlsattach

trio._ssl.SSLStream = trio_tlsattach.TLSStream  # type: ignore[misc, assignment]
trio.SSLStream = trio_tlsattach.TLSStream  # type: ignore[misc, assignment]

DIFFERENCES: dict[str, str] = {}
"""trio test name: why TLSStream differs there. Empty: made with the drop-in constructor,
TLSStream passes every test trio.SSLStream passes (the two tests that skip, skip for both)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = DIFFERENCES.get(getattr(item, "originalname", ""))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
