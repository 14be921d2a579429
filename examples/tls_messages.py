"""TCP > TLS > prefix(4): a request/reply exchange, then pop() twice back to raw TCP.

Run:  python examples/tls_messages.py
Prints the stack at its tallest (``<ProtocolStack tcp > tls(client, TLSv1.3) > prefix(4)>``),
the reply, then ``<ProtocolStack tcp>`` and the raw bytes exchanged after both pops.
"""

import trio
import trustme

from trio_tlsattach import (
    PrefixLayer,
    ProtocolStack,
    TLSClientLayer,
    TLSServerLayer,
    open_tcp,
)


async def main() -> None:
    ca = trustme.CA()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def server() -> None:
        stack = ProtocolStack(await listener.accept())
        await stack.push(TLSServerLayer(ca.issue_cert("localhost")))
        msgs = await stack.push(PrefixLayer(4))
        request = await msgs.receive_message()
        await msgs.send_message(b"reply to " + request)
        await stack.pop()  # prefix off
        await stack.pop()  # TLS off: close_notify both ways
        tcp = stack.top
        await tcp.send_all(b"raw TCP again")
        await stack.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        async with ProtocolStack(await open_tcp("127.0.0.1", port)) as stack:
            await stack.push(TLSClientLayer(ca, server_hostname="localhost"))
            msgs = await stack.push(PrefixLayer(4))
            print(stack)
            await msgs.send_message(b"request")
            print("reply:", await msgs.receive_message())
            await stack.pop()
            tcp = await stack.pop()
            print(stack)
            print("raw:", await tcp.receive_some())
    await listener.aclose()


if __name__ == "__main__":
    trio.run(main)
