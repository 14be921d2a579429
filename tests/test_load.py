"""The listener at scale: 5,000 clients at once through one TLSListener with 2,000 state blocks.

The server runs in this process (so the test can count its file descriptors, Trio tasks and
state blocks); the crowd runs in a child process (this file run as a script), so the two use
both cores and the client's sockets do not count against the server. The crowd stops by
itself: every client has a deadline, and the whole crowd one more.

Every admitted client holds its connection until each of the 5,000 has an answer, so exactly
2,000 are admitted and 3,000 refused; then the admitted ones echo a kilobyte and close. A
refusal must be the listener's clean one (a TLS ``internal_error`` alert and a FIN), never a
reset or a hang. Afterwards no fd, task or block has leaked.

Memory is measured once garbage is collected and ``malloc_trim`` has given the C heap's free
pages back. Live Python blocks return to within 10 % of where they were before any crowd (in
practice 0.3 %). RSS does not, on CPython: the first burst leaves its high-water mark (a
pymalloc arena stays mapped while one object in it lives, the C heap keeps partly used pages,
and dicts, sets and lists that grew to 5,000 entries keep their tables), about +35 MiB over a
cold 60 MiB here. trio's own server keeps the same plateau: crowds of 2,000 concurrent echo
clients took ``trio.serve_ssl_over_tcp`` from 49 to 68, 67, 68 MiB settled, and our listener
from 49 to 69, 71, 71 MiB (same machine, one after the other). So RSS and the C heap's bytes
in use (glibc's ``mallinfo2``: OpenSSL's memory, about 12 MiB) are checked for what a server
needs, a plateau: the first crowd warms up, and after the later ones they are within 10 % of
where the first left them.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import resource
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from test_reliability import fd_count, task_count

import trio_tlsattach as ta
from trio_tlsattach._tunnel import echo

CLIENTS = 5000
BLOCKS = 2000
PAYLOAD = bytes(range(256)) * 4
CROWD_DEADLINE = 75.0  # the child gives up by itself after this
TEST_DEADLINE = 90.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class _MallInfo2(ctypes.Structure):
    _fields_ = [  # glibc's struct mallinfo2, all size_t
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Memory:
    """A settled reading: RSS, live pymalloc blocks, C heap bytes in use (None off glibc)."""

    rss: int
    python_blocks: int
    c_heap: int | None

    @classmethod
    def settled(cls) -> Memory:
        gc.collect()
        path = ctypes.util.find_library("c")
        libc = ctypes.CDLL(path) if path else None
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim(0)
        c_heap = None
        mallinfo2 = getattr(libc, "mallinfo2", None)
        if mallinfo2 is not None:
            mallinfo2.restype = _MallInfo2
            info = mallinfo2()
            c_heap = info.uordblks + info.hblkhd
        return cls(rss_bytes(), sys.getallocatedblocks(), c_heap)

    def __str__(self) -> str:
        heap = "-" if self.c_heap is None else f"{self.c_heap / 2**20:.0f}"
        return f"RSS {self.rss / 2**20:.0f} MiB, {self.python_blocks} blocks, C heap {heap} MiB"


def within(value: int | None, start: int | None, share: float = 0.1) -> bool:
    return value is None or start is None or abs(value - start) <= share * start


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (skip when the hard limit forbids it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed for {CLIENTS} clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    return soft, hard


# --- the crowd (this file run as a script, in a child process) ----------------------------------


def outcome_of(exc: BaseException) -> str:
    """A refusal by the listener is its alert; anything else is named by class and cause."""
    if isinstance(exc, ta.TLSError) and "INTERNAL_ERROR" in str(exc):
        return "refused"
    cause = exc.__cause__ or exc.__context__
    return f"{type(exc).__name__}({type(cause).__name__ if cause else ''})"


async def crowd(port: int, ca: str, clients: int) -> dict[str, int]:
    """``clients`` handshakes at once; the admitted echo once all have an answer."""
    layer = ta.TLSClientLayer(ca, server_hostname="localhost", session_cache=False)
    outcomes: collections.Counter[str] = collections.Counter()
    everyone = trio.Event()

    def answered(what: str) -> None:
        outcomes[what] += 1
        if sum(outcomes.values()) == clients:
            everyone.set()

    async def one() -> None:
        try:
            tls = await layer.attach(await ta.open_tcp("127.0.0.1", port), ta.after(60))
        except (ta.StackError, trio.BrokenResourceError, OSError) as exc:
            answered(outcome_of(exc))
            return
        async with tls:
            answered("admitted")
            await everyone.wait()  # hold the state block until the whole crowd has an answer
            await tls.send_all(PAYLOAD)
            await tls.send_eof()
            received = bytearray()
            while data := await tls.receive_some():
                received += data
            outcomes["echoed" if received == PAYLOAD else "bad echo"] += 1

    with trio.move_on_after(CROWD_DEADLINE) as scope:
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(one)
    if scope.cancelled_caught:
        outcomes["crowd deadline"] += 1
    return dict(outcomes)


# --- the test ------------------------------------------------------------------------------------


class Wave:
    """One crowd against the listener: its outcomes, duration and the server's peak RSS."""

    def __init__(self, port: int, ca_path: Path) -> None:
        self.command = [sys.executable, __file__, str(port), str(ca_path), str(CLIENTS)]
        self.outcomes: dict[str, int] = {}
        self.seconds = 0.0
        self.peak = 0

    async def run(self) -> None:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:

            async def sample() -> None:
                while True:
                    self.peak = max(self.peak, rss_bytes())
                    await trio.sleep(0.05)

            nursery.start_soon(sample)
            child = await trio.run_process(self.command, capture_stdout=True, check=False)
            nursery.cancel_scope.cancel()
        self.seconds = time.monotonic() - started
        assert child.returncode == 0, child
        self.outcomes = json.loads(child.stdout)

    def __str__(self) -> str:
        return f"{self.outcomes} in {self.seconds:.1f} s, peak RSS {self.peak / 2**20:.0f} MiB"


@pytest.mark.slow
async def test_5000_clients_through_2000_blocks(
    tmp_path: Path, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> None:
    """Three identical crowds (memory: see the module documentation)."""
    soft, hard = raise_fd_limit(CLIENTS + 1000)  # inherited by the crowd, which needs as many
    ca_path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_path))
    pool = ta.StateBlockPool(BLOCKS)
    errors: collections.Counter[str] = collections.Counter()
    raw = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    listener = ta.TLSListener(
        raw,
        ta.TLSServerLayer(tls_server_cert),
        handshake_deadline=60,
        pool=pool,
        on_error=lambda exc, peer: errors.update([type(exc).__name__]),
    )
    waves = [Wave(raw.socket.getsockname()[1], ca_path) for _ in range(3)]
    memory: list[Memory] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve, echo)
            await trio.testing.wait_all_tasks_blocked()
            fds, tasks = fd_count(), task_count()
            memory.append(Memory.settled())
            with trio.fail_after(TEST_DEADLINE):
                for wave in waves:
                    await wave.run()
                    while pool.in_use or task_count() > tasks:  # the last closes in flight
                        await trio.sleep(0.01)
                    memory.append(Memory.settled())
            await trio.testing.wait_all_tasks_blocked()
            leaked = {"fds": fd_count() - fds, "tasks": task_count() - tasks, "blocks": pool.in_use}
            nursery.cancel_scope.cancel()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    figures = (
        f"{CLIENTS} clients, {BLOCKS} blocks: {'; '.join(map(str, waves))}; leaked {leaked}; "
        f"settled: {' -> '.join(map(str, memory))}"
    )
    logging.getLogger("test_load").warning("%s", figures)
    for wave in waves:
        assert wave.outcomes == {"admitted": BLOCKS, "refused": CLIENTS - BLOCKS, "echoed": BLOCKS}
    assert errors == {"OutOfStateBlocks": len(waves) * (CLIENTS - BLOCKS)}, figures
    assert leaked == {"fds": 0, "tasks": 0, "blocks": 0}, figures
    cold, warm, *later = memory
    for reading in (warm, *later):  # every live Python object of the load is gone
        assert within(reading.python_blocks, cold.python_blocks), figures
    for reading in later:  # past the first burst's high-water mark, no growth
        assert within(reading.c_heap, warm.c_heap), figures
    # One settled RSS scatters by up to 10 % from burst to burst with no trend (which pages a
    # burst leaves partly used is chance); a leak would lift every reading, so the lowest is
    # what is compared.
    assert within(min(reading.rss for reading in later), warm.rss), figures


if __name__ == "__main__":  # the crowd: PORT CA_PATH CLIENTS; prints its outcomes as JSON
    print(json.dumps(trio.run(crowd, int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
