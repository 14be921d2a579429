"""A TLS session, a clean detach on both ends, then plaintext on the very same socket.

Run:  python examples/detach.py
Prints the secret exchanged over TLS, then the plaintext exchanged after the detach. The
server's first plaintext bytes may arrive in the same segment as its close_notify: detach hands
them back in front of the socket, so the client reads them like any others.
"""

import trio
import trustme

from trio_tlsattach import TLSClientLayer, TLSServerLayer, socketpair


async def main() -> None:
    ca = trustme.CA()
    client_raw, server_raw = socketpair()

    async def server() -> None:
        tls = await TLSServerLayer(ca.issue_cert("localhost")).attach(server_raw)
        print("server got over TLS:", await tls.receive_some())
        raw = await tls.detach()  # close_notify both ways; the socket is ours again
        await raw.send_all(b"plaintext from the server")
        print("server got in plaintext:", await raw.receive_some())
        await raw.aclose()

    async def client() -> None:
        tls = await TLSClientLayer(ca, server_hostname="localhost").attach(client_raw)
        await tls.send_all(b"the secret")
        raw = await tls.detach()
        assert raw is client_raw  # the same object we attached to
        print("client got in plaintext:", await raw.receive_some())
        await raw.send_all(b"plaintext from the client")
        await raw.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        nursery.start_soon(client)


if __name__ == "__main__":
    trio.run(main)
