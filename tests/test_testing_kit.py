"""The conformance kit itself, run on the pass-through layer over every transport."""

import pytest

from trio_tlsattach.testing import TRANSPORT_PAIRS, PassThroughLayer, attach_both, check_layer


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer_on_passthrough(transport: str) -> None:
    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        layer = PassThroughLayer()
        return await attach_both(a, b, layer.attach, layer.attach)

    await check_layer(attach_pair, transport_pair=transport)  # type: ignore[arg-type]


async def test_check_layer_under_mock_clock(autojump_clock: object) -> None:
    async def attach_pair(a: object, b: object) -> tuple[object, object]:
        layer = PassThroughLayer()
        return await attach_both(a, b, layer.attach, layer.attach)

    await check_layer(attach_pair)  # type: ignore[arg-type]
