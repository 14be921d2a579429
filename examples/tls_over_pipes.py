"""TLS across two pipes between two processes: the child's stdin and stdout.

Run:  python examples/tls_over_pipes.py
The parent starts itself again as a child whose stdin/stdout are pipes; the child runs a TLS
server on its stdio (``open_pipe(0, 1)``), the parent a TLS client on the other ends. Prints
``child says: b'HELLO THROUGH PIPES' over TLSv1.3`` and exits (within 30 seconds whatever
happens; the child is killed if it is still running).
"""

import os
import subprocess
import sys
import tempfile

import trio
import trustme

from trio_tlsattach import TLSClientLayer, TLSServerLayer, open_pipe


async def child(cert_path: str) -> None:
    tls = await TLSServerLayer(cert_path).attach(open_pipe(0, 1, close_fds=False))
    async with tls:
        await tls.send_all((await tls.receive_some()).upper())
        await tls.send_eof()
        await tls.receive_some()  # until the parent's close_notify


async def parent() -> None:
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as directory:  # the child's certificate file
        cert_path = os.path.join(directory, "server.pem")
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(cert_path)
        await talk_to_child(ca, cert_path)


async def talk_to_child(ca: trustme.CA, cert_path: str) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--child", cert_path], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    # Our own pipe transport on the child's pipes (trio's streams hand their fds over).
    pipes = open_pipe(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
    await proc.stdin.aclose()
    await proc.stdout.aclose()
    try:
        with trio.fail_after(30):  # bounded, whatever the child does
            tls = await TLSClientLayer(ca, server_hostname="localhost").attach(pipes)
            async with tls:
                await tls.send_all(b"hello through pipes")
                print("child says:", await tls.receive_some(), "over", tls.tls_version)
                assert await tls.receive_some() == b""  # the child's close_notify
                await tls.send_eof()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        trio.run(child, sys.argv[2])
    else:
        trio.run(parent)
