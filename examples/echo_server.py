"""A TLS echo server in a nursery, and three clients talking to it.

Run:  python examples/echo_server.py
Prints each client's reply (``client 0 got b'hello from client 0'`` ...) and exits.
"""

import trio
import trustme

from trio_tlsattach import TLSClientLayer, TLSServerLayer, TLSStream, after, open_tcp, serve_tls


async def echo(tls: TLSStream) -> None:
    while data := await tls.receive_some():
        await tls.send_all(data)


async def client(port: int, ca: trustme.CA, n: int) -> None:
    tls = await TLSClientLayer(ca, server_hostname="localhost").attach(
        await open_tcp("127.0.0.1", port), deadline=after(10)
    )
    async with tls:
        await tls.send_all(f"hello from client {n}".encode())
        print(f"client {n} got {await tls.receive_some()!r}")


async def main() -> None:
    ca = trustme.CA()
    layer = TLSServerLayer(ca.issue_cert("localhost"))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_tls, echo, 0, layer)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with trio.open_nursery() as clients:
            for n in range(3):
                clients.start_soon(client, port, ca, n)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
