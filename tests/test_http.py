"""The HTTP layer: check_layer, the head exchange both ways, detach with the body, bad input."""

from __future__ import annotations

import pytest

from trio_tlsattach._cores.http import PeerDone
from trio_tlsattach._http import HTTPLayer, HTTPStream
from trio_tlsattach.testing import TRANSPORT_PAIRS, attach_both, check_layer


async def _exchange_heads(client: HTTPStream, server: HTTPStream) -> None:
    """A request one way, a response the other: both ends are then in their bodies."""
    await client.send_request("POST", "/upload")
    await client.send_field("Host", "example.org")
    await client.done()
    assert await server.receive_request() == ("POST", "/upload")
    assert await server.receive_fields() == [("Host", "example.org")]
    await server.send_status(200, "OK")
    await server.done()
    assert await client.receive_status() == (200, "OK")
    with pytest.raises(PeerDone):
        await client.receive_field()


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer(transport: str) -> None:
    async def attach_pair(a: object, b: object) -> tuple[HTTPStream, HTTPStream]:
        layer = HTTPLayer()
        client, server = await attach_both(a, b, layer.attach, layer.attach)
        await _exchange_heads(client, server)
        return client, server

    await check_layer(attach_pair, transport_pair=transport)
