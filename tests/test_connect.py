"""Opening transports (``_connect``): TCP by address and by name, Unix sockets, pipes, and the
deadline and refusal of a connect."""

import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_tlsattach as ta


async def test_open_tcp_and_unix(short_socket_dir: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    assert port != 0
    client = await ta.open_tcp("127.0.0.1", port, deadline=ta.after(10))
    server = await listeners[0].accept()
    async with client, server:
        await client.send_all(b"tcp")
        assert await server.receive_some(10) == b"tcp"
    await listeners[0].aclose()
    path = str(short_socket_dir / "sock")
    lsock = trio.socket.socket(trio.socket.AF_UNIX)
    await lsock.bind(path)
    lsock.listen()
    uclient = await ta.open_unix(path)
    userver, _ = await lsock.accept()
    async with uclient:
        await uclient.send_all(b"unix")
        assert await userver.recv(10) == b"unix"
    userver.close()
    lsock.close()


async def test_open_tcp_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connecting is refused
        with pytest.raises(OSError, match="connect"):
            await ta.open_tcp("127.0.0.1", port)


async def test_open_pipe_on_existing_fds() -> None:
    r, w = os.pipe()
    t = ta.open_pipe(r, w)
    async with t:
        await t.send_all(b"loop")
        assert await t.receive_some(10) == b"loop"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(r)  # closed with the transport
    for bad in ((-1, 1), (True, 1), ("0", 1)):
        with pytest.raises(ta.InvalidArgument):
            ta.open_pipe(*bad)


async def test_open_pipe_close_fds_false_leaves_them_open() -> None:
    r, w = os.pipe()
    t = ta.open_pipe(r, w, close_fds=False)
    await t.aclose()
    os.write(w, b"x")
    assert os.read(r, 1) == b"x"
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("host", ["127.0.0.1", b"127.0.0.1", "::1", "localhost"])
async def test_open_tcp_by_address_or_name(host: str | bytes) -> None:
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listeners = await trio.open_tcp_listeners(0, host="::1" if host == "::1" else "127.0.0.1")
    except OSError:
        pytest.skip("no loopback for this family")
    port = listeners[0].socket.getsockname()[1]
    client = await ta.open_tcp(host, port)
    server = await listeners[0].accept()
    async with client, server:
        assert client.socket.family == family
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await client.send_all(b"hi")
        assert await server.receive_some(10) == b"hi"
    await listeners[0].aclose()


async def test_open_tcp_deadline_while_the_peer_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the accept queue: the kernel then drops further SYNs, and connect hangs.
        held = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                held.append(s)
            await trio.sleep(0.1)

            async def connect_until_one_hangs() -> None:
                for _ in range(8):  # in case the queue had room for one more
                    (await ta.open_tcp("127.0.0.1", port, deadline=ta.after(5))).socket.close()

            start = trio.current_time()
            with pytest.raises(ta.DeadlineExceeded):
                await connect_until_one_hangs()
            assert trio.current_time() - start == pytest.approx(5, abs=1)
        finally:
            for s in held:
                s.close()
