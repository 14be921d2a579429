"""The testing kit itself: check_layer on the pass-through layer, the fixtures, and that the
kit really catches broken layers."""

import errno
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tlsattach as ta
from trio_tlsattach._base import AttachedMixin
from trio_tlsattach.testing import (
    TRANSPORT_PAIRS,
    MessagePassThroughLayer,
    PassThroughLayer,
    PassThroughStream,
    attach_both,
    check_layer,
    close_stack_of,
    stack_pair,
    unix_pair,
)


async def _pass_pair(a: Any, b: Any) -> tuple[Any, Any]:
    layer = PassThroughLayer()
    return await attach_both(a, b, layer.attach, layer.attach)


@pytest.mark.parametrize("transport", list(TRANSPORT_PAIRS))
async def test_check_layer_on_passthrough(transport: str) -> None:
    await check_layer(_pass_pair, transport_pair=transport)


async def test_check_layer_on_passthrough_over_unix(short_socket_dir: Path) -> None:
    count = 0

    async def make() -> tuple[ta.SocketTransport, ta.SocketTransport]:
        nonlocal count
        count += 1
        return await unix_pair(short_socket_dir / f"s{count}")

    await check_layer(_pass_pair, transport_pair=make)
    assert count >= 3  # the contract, the close check and trio's checks each use fresh pairs


@pytest.mark.parametrize("transport", [ta.socketpair, ta.pipe_pair, ta.memory_pair])
async def test_check_layer_takes_a_pair_function(transport: Any) -> None:
    await check_layer(_pass_pair, transport_pair=transport)


@pytest.mark.parametrize("transport", ["socketpair", "memory"])
async def test_check_layer_under_mock_clock(
    autojump_clock: trio.testing.MockClock, transport: str
) -> None:
    start = trio.current_time()
    await check_layer(_pass_pair, transport_pair=transport)
    assert trio.current_time() - start >= 4 * 5  # four receives ran into after(5), virtually


async def test_check_layer_takes_little_real_time() -> None:
    start = trio.current_time()
    await check_layer(_pass_pair)
    assert trio.current_time() - start < 5


async def test_stacked_layers_detach_to_the_layer_below() -> None:
    async def two_layers(a: Any, b: Any) -> tuple[Any, Any]:
        x, y = await _pass_pair(a, b)
        return await _pass_pair(x, y)

    await check_layer(two_layers)


@pytest.mark.parametrize("transport", ["socketpair", "memory"])
async def test_check_layer_on_a_message_layer(transport: str) -> None:
    async def prefix_then_mpass(a: Any, b: Any) -> tuple[Any, Any]:
        x, y = await attach_both(a, b, ta.PrefixLayer(4).attach, ta.PrefixLayer(4).attach)
        return await attach_both(
            x, y, MessagePassThroughLayer().attach, MessagePassThroughLayer().attach
        )

    await check_layer(prefix_then_mpass, transport_pair=transport)


async def test_unknown_transport_pair_name() -> None:
    with pytest.raises(ValueError, match="unknown transport pair"):
        await check_layer(_pass_pair, transport_pair="carrier-pigeon")
    with pytest.raises(TypeError):
        await check_layer(_pass_pair, transport_pair=42)  # type: ignore[arg-type]


# --- the kit must fail broken layers ----------------------------------------------------------


class _NoOwnershipLayer:
    """Wraps a stream but never takes ownership: the old handle keeps working."""

    async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> PassThroughStream:
        top = await PassThroughLayer().attach(stream)
        stream._disown()
        return top


class _WrongDetach(AttachedMixin, ta.ByteStream):
    """Detach hands back a different (new) transport."""

    _below: ta.ByteStream

    def __init__(self, below: Any) -> None:
        super().__init__()
        self._bind(below)

    def label(self) -> str:
        return "wrong"

    async def _receive_some(self, max_bytes: int | None = None, deadline: float = -1) -> bytes:
        return await self._below._receive_some(max_bytes, deadline)

    async def _receive_into(
        self, buffer: Any, deadline: float = -1, checkpoint: bool = True
    ) -> int:
        return await self._below._receive_into(buffer, deadline, checkpoint)

    async def _send_all(self, data: Any, deadline: float = -1, checkpoint: bool = True) -> None:
        await self._below._send_all(data, deadline, checkpoint)

    async def _wait_send_all_might_not_block(self) -> None:
        await self._below._wait_send_all_might_not_block()

    async def _send_eof(self, deadline: float = -1) -> None:
        await self._below._send_eof(deadline)

    async def _detach_protocol(self, deadline: float) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def detach(self, deadline: float = -1) -> Any:
        await self._detach_handle(deadline)
        return ta.memory_pair()[0]


class _ImpatientLayer:
    """Its receives ignore the deadline and give up at once."""

    async def attach(self, stream: Any, deadline: float = ta.FOREVER) -> PassThroughStream:
        top = await PassThroughLayer().attach(stream)
        real = top._receive_some

        async def receive_some(max_bytes: int | None = None, deadline: float = -1) -> bytes:
            if deadline != ta.FOREVER:
                await trio.lowlevel.checkpoint()
                raise ta.DeadlineExceeded("too soon")
            return await real(max_bytes, deadline)

        top._receive_some = receive_some  # type: ignore[method-assign]
        return top


async def _attach_with(layer: Any, a: Any, b: Any) -> tuple[Any, Any]:
    return await attach_both(a, b, layer.attach, layer.attach)


async def test_kit_catches_a_layer_that_does_not_own_its_stream() -> None:
    with pytest.raises(AssertionError, match="owned"):
        await check_layer(lambda a, b: _attach_with(_NoOwnershipLayer(), a, b))


async def test_kit_catches_a_detach_that_returns_another_stream() -> None:
    async def attach(a: Any, b: Any) -> tuple[Any, Any]:
        await trio.lowlevel.checkpoint()
        return _WrongDetach(a), _WrongDetach(b)

    with pytest.raises(AssertionError, match="detach returned"):
        await check_layer(attach)


async def test_kit_catches_a_deadline_that_fires_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with pytest.raises(AssertionError, match="too early"):
        await check_layer(lambda a, b: _attach_with(_ImpatientLayer(), a, b))


async def test_kit_turns_a_hang_into_an_assertion(autojump_clock: trio.testing.MockClock) -> None:
    async def attach(a: Any, b: Any) -> tuple[Any, Any]:
        x, y = await _pass_pair(a, b)

        async def never(deadline: float = -1) -> Any:
            await trio.sleep_forever()

        x.detach = never
        return x, y

    with pytest.raises(AssertionError, match="no progress"):
        await check_layer(attach)


async def test_kit_closes_everything_when_a_check_fails() -> None:
    made: list[Any] = []

    def pair() -> tuple[Any, Any]:
        a, b = ta.socketpair()
        made.extend((a, b))
        return a, b

    with pytest.raises(AssertionError):
        await check_layer(lambda a, b: _attach_with(_NoOwnershipLayer(), a, b), transport_pair=pair)
    assert made
    assert all(h.closed for h in made)


async def test_close_stack_of_closes_from_the_top() -> None:
    a, b = ta.socketpair()
    top = await PassThroughLayer().attach(await PassThroughLayer().attach(a))
    await close_stack_of(a)  # a is owned; the whole stack above it is closed too
    assert a.closed
    assert top.closed
    await close_stack_of(a)  # idempotent
    await b.aclose()


# --- fixtures ---------------------------------------------------------------------------------


def test_certificate_fixtures(tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert) -> None:
    pem = tls_server_cert.cert_chain_pems[0].bytes()
    assert b"BEGIN CERTIFICATE" in pem
    assert tls_server_cert.private_key_pem.bytes().startswith(b"-----BEGIN")


def test_session_scoped_certificates(tls_ca: trustme.CA, request: pytest.FixtureRequest) -> None:
    assert request.getfixturevalue("tls_ca") is tls_ca
    defs = request._fixturemanager.getfixturedefs("tls_ca", request.node)
    assert defs is not None
    assert defs[-1].scope == "session"


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str) -> str:
    """A TLS handshake between two contexts over memory BIOs; returns the version."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(10):
        for i, (obj, out, peer_in) in enumerate(((client, c_out, s_in), (server, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done):
            break
    assert all(done)
    version = client.version()
    assert version is not None
    return version


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_ssl_contexts_fit_together(
    client_ssl_context: ssl.SSLContext, server_ssl_context: ssl.SSLContext, hostname: str
) -> None:
    assert client_ssl_context.check_hostname
    assert client_ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert _handshake(client_ssl_context, server_ssl_context, hostname) in ("TLSv1.2", "TLSv1.3")


def test_client_context_checks_the_hostname(
    client_ssl_context: ssl.SSLContext, server_ssl_context: ssl.SSLContext
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"(?i)hostname|match"):
        _handshake(client_ssl_context, server_ssl_context, "example.com")


def test_client_context_trusts_only_the_test_ca(
    client_ssl_context: ssl.SSLContext,
) -> None:
    other = trustme.CA().issue_cert("localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.configure_cert(server)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client_ssl_context, server, "localhost")


async def test_transport_pair_fixture(transport_pair: tuple[ta.ByteStream, ta.ByteStream]) -> None:
    a, b = transport_pair
    assert a.status == b.status == "open"
    await a.send_all(b"hello")
    assert await b.receive_some(10) == b"hello"
    await b.send_all(b"back")
    assert await a.receive_some(10) == b"back"
    if isinstance(a, ta.SocketTransport) and a.label() == "tcp":
        host, port = a.extra(ta.StackAttribute.local_address)[:2]
        assert host == "127.0.0.1"
        assert port != 0
    # Leave a layer attached: the fixture's teardown closes the stack anyway.
    await PassThroughLayer().attach(a)


def test_errno_of_bad_handle_is_ebadf() -> None:
    assert ta.BadHandle().errno == errno.EBADF


# --- stack_pair --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["socketpair", "memory", "tcp"])
async def test_stack_pair_tls_then_framing(
    transport: str, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    client, server = await stack_pair(
        (
            ta.TLSClientLayer(tls_ca, server_hostname="localhost"),
            ta.TLSServerLayer(tls_server_cert),
        ),
        ta.PrefixLayer(4),
        transport=transport,
    )
    async with client, server:
        assert repr(client).endswith("> prefix(4)>")
        assert isinstance(client.find(ta.TLSStream), ta.TLSStream)
        top, other = client.top, server.top
        assert isinstance(top, ta.MessageStream)
        assert isinstance(other, ta.MessageStream)
        await top.send_message(b"hello")
        assert await other.receive_message() == b"hello"
        assert await server.pop() is server.find(ta.TLSStream)  # framing off, TLS on top again
        assert len(server.layers) == 2


async def test_stack_pair_with_no_layers_is_two_transports() -> None:
    a, b = await stack_pair()
    async with a, b:
        assert len(a.layers) == len(b.layers) == 1
        top_a, top_b = a.top, b.top
        assert isinstance(top_a, ta.ByteStream)
        assert isinstance(top_b, ta.ByteStream)
        await top_a.send_all(b"x")
        assert await top_b.receive_some(1) == b"x"


async def test_stack_pair_failure_closes_both_ends(tls_server_cert: trustme.LeafCert) -> None:
    stranger = trustme.CA()
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.RaisesGroup(ta.TLSError, ta.TLSError):
        await stack_pair(
            (
                ta.TLSClientLayer(stranger, server_hostname="localhost"),
                ta.TLSServerLayer(tls_server_cert),
            ),
            transport="socketpair",
        )
    assert len(os.listdir("/proc/self/fd")) == fds_before  # both socketpair ends closed
    with pytest.raises(ValueError, match="unknown transport pair"):
        await stack_pair(transport="carrier-pigeon")
