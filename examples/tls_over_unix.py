"""TLS over a Unix-domain socket, with a ProtocolStack on each end.

Run:  python examples/tls_over_unix.py
Prints both stacks (``client: <ProtocolStack unix > tls(client, TLSv1.3)>`` and the server's),
then ``echo: b'over a unix socket'``, and exits. The socket lives in a temporary directory that
is removed at the end.
"""

import os
import tempfile

import trio
import trustme

from trio_tlsattach import ProtocolStack, TLSClientLayer, TLSServerLayer, open_unix


async def main() -> None:
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as directory:  # removed, socket file and all, at the end
        path = os.path.join(directory, "tls.sock")
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
