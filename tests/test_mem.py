"""Memory blocks: checks on the caller's buffer, overlap detection, pools and release."""

import errno
import mmap

import pytest

import trio_tlsattach as ta
from trio_tlsattach._mem import HEADER_SIZE, StateBlock

SIZE = 4096


def test_good_buffers() -> None:
    for mem in (bytearray(SIZE), mmap.mmap(-1, SIZE), memoryview(bytearray(SIZE * 2))[SIZE:]):
        block = StateBlock.claim(mem, SIZE)
        assert block.view is not None
        assert block.view.nbytes == SIZE
        block.release()
        assert block.released


@pytest.mark.parametrize(
    "bad",
    [
        b"x" * SIZE,  # read-only
        bytearray(SIZE - 1),  # too small
        memoryview(bytearray(SIZE * 2))[::2],  # not contiguous
    ],
)
def test_bad_buffers_are_einval(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        StateBlock.claim(bad, SIZE)
    assert info.value.errno == errno.EINVAL


def test_not_a_buffer_is_einval_typeerror() -> None:
    with pytest.raises(TypeError) as info:
        StateBlock.claim(12, SIZE)
    assert info.value.errno == errno.EINVAL  # type: ignore[attr-defined]


def test_in_use_twice_and_overlap() -> None:
    arena = bytearray(SIZE * 3)
    first = StateBlock.claim(arena, SIZE)
    with pytest.raises(ta.InvalidArgument, match="live layer"):
        StateBlock.claim(arena, SIZE)
    with pytest.raises(ta.InvalidArgument):
        StateBlock.claim(memoryview(arena)[SIZE // 2 :], SIZE)
    second = StateBlock.claim(memoryview(arena)[SIZE:], SIZE)  # disjoint: fine
    first.release()
    second.release()
    arena.extend(b"0")  # nothing holds the buffer any more: it can be resized
    again = StateBlock.claim(arena, SIZE)
    again.release()


def test_release_is_idempotent() -> None:
    block = StateBlock.claim(bytearray(SIZE), SIZE)
    block.release()
    block.release()


def test_pool_exhaustion_and_release() -> None:
    pool = ta.StateBlockPool(2, SIZE)
    a = pool.acquire()
    b = pool.acquire()
    assert pool.available == 0
    assert pool.in_use == 2
    with pytest.raises(ta.OutOfStateBlocks) as info:
        pool.acquire()
    assert info.value.errno == errno.ENOMEM
    assert isinstance(info.value, MemoryError)
    a.release()
    assert pool.available == 1
    c = pool.acquire()
    b.release()
    c.release()
    assert pool.available == 2


def test_pool_block_claimed_once() -> None:
    pool = ta.StateBlockPool(1, SIZE)
    block = pool.acquire()
    assert StateBlock.claim(block, SIZE) is block
    with pytest.raises(ta.InvalidArgument):
        StateBlock.claim(block, SIZE)
    block.release()
    with pytest.raises(ta.InvalidArgument, match="released"):
        StateBlock.claim(block, SIZE)


@pytest.mark.parametrize(
    ("count", "size"), [(0, SIZE), (True, SIZE), (1, HEADER_SIZE - 1), (1, "x")]
)
def test_bad_pool_arguments(count: object, size: object) -> None:
    with pytest.raises(ta.InvalidArgument):
        ta.StateBlockPool(count, size)  # type: ignore[arg-type]


def test_tls_size_is_documented_and_large_enough() -> None:
    assert ta.TLS_SIZE >= HEADER_SIZE + 4 * (16384 + 256)


def test_a_dropped_lease_does_not_pin_its_range() -> None:
    import gc

    arena = bytearray(SIZE * 4)
    block = StateBlock.claim(memoryview(arena)[SIZE:], SIZE)
    del block  # never released: a layer dropped without close
    gc.collect()
    again = StateBlock.claim(memoryview(arena)[SIZE:], SIZE)
    neighbour = StateBlock.claim(memoryview(arena)[2 * SIZE :], SIZE)
    with pytest.raises(ta.InvalidArgument):
        StateBlock.claim(memoryview(arena)[SIZE + 1 :], SIZE)
    again.release()
    neighbour.release()


def test_many_live_blocks_are_checked_by_their_neighbours() -> None:
    pool = ta.StateBlockPool(3000, HEADER_SIZE)
    blocks = [pool.acquire() for _ in range(3000)]
    for block in blocks[::2]:
        block.release()
    again = [pool.acquire() for _ in range(1500)]
    assert pool.available == 0
    for block in blocks[1::2] + again:
        block.release()
    assert pool.available == 3000
