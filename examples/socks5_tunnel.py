"""TLS through a SOCKS5 proxy: the proxy is ours (``serve_socks5``, with a password), and the
client speaks SOCKS5 on TCP, then pushes TLS to the target on the very same stream.

Run:  python examples/socks5_tunnel.py
Prints the stack (``tcp > tls`` once SOCKS5 is done: it is a handshake, not a layer), the
target's reply over TLS, and the proxy's log line for the connection.
"""

import logging
from functools import partial

import trio
import trustme

from trio_tlsattach import (
    ProtocolStack,
    TLSClientLayer,
    TLSServerLayer,
    after,
    open_tcp,
    serve_socks5,
    socks5_client_connectbyname,
)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="proxy log: %(message)s")
    ca = trustme.CA()

    async def target(stream: trio.SocketStream) -> None:  # a TLS greeter
        async with ProtocolStack(stream) as stack:
            tls = await stack.push(TLSServerLayer(ca.issue_cert("localhost")))
            await tls.send_all(b"hello over TLS, through SOCKS5")

    async with trio.open_nursery() as nursery:
        targets = await nursery.start(partial(trio.serve_tcp, target, 0, host="127.0.0.1"))
        target_port = targets[0].socket.getsockname()[1]
        proxy = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        await nursery.start(partial(serve_socks5, proxy, credentials=("alice", "s3cret")))

        to_proxy = await open_tcp("127.0.0.1", proxy.socket.getsockname()[1])
        to_target = await socks5_client_connectbyname(
            to_proxy, "alice", "s3cret", "localhost", target_port, after(10)
        )  # the same stream, now relayed to the target
        async with ProtocolStack(to_target) as stack:
            tls = await stack.push(TLSClientLayer(ca, server_hostname="localhost"))
            print(stack)
            print("target says:", await tls.receive_some())
        await trio.sleep(0.1)  # let the proxy log the connection's end
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
