"""TCP > TLS > WebSocket: a wss:// echo, then the close handshake pops back to plain TLS.

Run:  python examples/wss_echo.py
Prints the stack at its tallest, the echoed text and binary messages, the server's close
status, and the TLS stream's next bytes after the WebSocket layer was popped.
"""

import trio
import trustme

from trio_tlsattach import ProtocolStack, TLSClientLayer, TLSServerLayer, WSLayer, open_tcp


async def main() -> None:
    ca = trustme.CA()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def server() -> None:
        async with ProtocolStack(await listener.accept()) as stack:
            await stack.push(TLSServerLayer(ca.issue_cert("localhost")))
            ws = await stack.push(WSLayer(server_side=True))
            print(f"server: the client asked for {ws.resource} on {ws.host}")
            while (message := await ws.receive()) is not None:  # until the client's close
                await ws.send(message)  # str as text, bytes as binary
            tls = await stack.pop()  # answers the close: TLS is ours again
            await tls.send_all(b"plain TLS again")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        async with ProtocolStack(await open_tcp("127.0.0.1", port)) as stack:
            await stack.push(TLSClientLayer(ca, server_hostname="localhost"))
            ws = await stack.push(WSLayer(resource="/echo", host="localhost"))
            print(stack)
            await ws.send("héllo")
            await ws.send(b"\x00\x01binary")
            print("echo:", await ws.receive(), await ws.receive())
            tls = await stack.pop()  # close handshake, status 1000
            print("close status:", ws.close_status)
            print("then:", await tls.receive_some())
    await listener.aclose()


if __name__ == "__main__":
    trio.run(main)
