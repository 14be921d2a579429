"""TLS over a Unix-domain socket, with a ProtocolStack on each end.

Run:  python examples/tls_over_unix.py
Prints both stacks (``<ProtocolStack unix > tls(server, TLSv1.3)>``) and the echoed line.
"""

import os
import tempfile

import trio
import trustme

from trio_tlsattach import ProtocolStack, TLSClientLayer, TLSServerLayer, open_unix


async def main() -> None:
    ca = trustme.CA()
    path = os.path.join(tempfile.mkdtemp(), "tls.sock")
    sock = trio.socket.socket(trio.socket.AF_UNIX)
    await sock.bind(path)
    sock.listen()
    listener = trio.SocketListener(sock)

    async def server() -> None:
        async with ProtocolStack(await listener.accept()) as stack:
            tls = await stack.push(TLSServerLayer(ca.issue_cert("localhost")))
            print("server:", stack)
            await tls.send_all(await tls.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        async with ProtocolStack(await open_unix(path)) as stack:
            tls = await stack.push(TLSClientLayer(ca, server_hostname="localhost"))
            print("client:", stack)
            await tls.send_all(b"over a unix socket")
            print("echo:", await tls.receive_some())
    await listener.aclose()


if __name__ == "__main__":
    trio.run(main)
