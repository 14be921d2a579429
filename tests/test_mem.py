"""Memory blocks: checks on the caller's buffer, overlap detection, pools and release."""

import array
import errno
import gc
import mmap
from collections.abc import Callable
from typing import Any

import pytest

import trio_tlsattach as ta
from trio_tlsattach._mem import HEADER_SIZE, STATE_RECORD, StateBlock

SIZE = 4096


@pytest.mark.parametrize(
    "make",
    [
        lambda: bytearray(SIZE),
        lambda: bytearray(SIZE * 3),  # bigger is fine: the first SIZE bytes are used
        lambda: mmap.mmap(-1, SIZE),
        lambda: memoryview(bytearray(SIZE * 2))[SIZE:],
        lambda: array.array("q", bytes(SIZE)),  # items of 8 bytes, taken as bytes
    ],
    ids=["bytearray", "bigger", "mmap", "slice", "array"],
)
def test_good_buffers(make: Callable[[], Any]) -> None:
    mem = make()
    block = StateBlock.claim(mem, SIZE)
    assert block.view is not None
    assert block.view.nbytes == SIZE
    assert block.view.format == "B"
    assert not block.view.readonly
    block.view[:4] = b"abcd"  # the layer writes into the caller's memory itself
    assert bytes(memoryview(mem).cast("B")[:4]) == b"abcd"
    block.release()
    assert block.released
    assert block.view is None


@pytest.mark.parametrize(
    "bad",
    [
        b"x" * SIZE,  # read-only
        memoryview(bytearray(SIZE)).toreadonly(),  # read-only view of writable memory
        bytearray(SIZE - 1),  # too small
        bytearray(0),
        memoryview(bytearray(SIZE * 2))[::2],  # not contiguous
    ],
    ids=["bytes", "readonly-view", "too-small", "empty", "strided"],
)
def test_bad_buffers_are_einval(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        StateBlock.claim(bad, SIZE)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("bad", [12, "text", None, [0] * SIZE])
def test_not_a_buffer_is_einval_typeerror(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        StateBlock.claim(bad, SIZE)
    assert isinstance(info.value, TypeError)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("size", [HEADER_SIZE - 1, 0, -1, True, 1.5, "64"])
def test_bad_block_sizes(size: object) -> None:
    with pytest.raises(ta.InvalidArgument):
        StateBlock(bytearray(SIZE), size)  # type: ignore[arg-type]


def test_a_refused_buffer_is_not_held() -> None:
    mem = bytearray(SIZE - 1)
    with pytest.raises(ta.InvalidArgument):
        StateBlock.claim(mem, SIZE)
    mem.extend(b"x")  # no export left behind: the bytearray can still be resized


def test_the_same_block_in_use_twice() -> None:
    mem = bytearray(SIZE)
    first = StateBlock.claim(mem, SIZE)
    with pytest.raises(ta.InvalidArgument, match="live layer") as info:
        StateBlock.claim(mem, SIZE)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(ta.InvalidArgument):
        StateBlock.claim(memoryview(mem), SIZE)  # another view of the same bytes
    first.release()
    StateBlock.claim(mem, SIZE).release()  # free again once released


def test_overlapping_slices_refused_disjoint_fine() -> None:
    arena = bytearray(SIZE * 4)
    view = memoryview(arena)
    middle = StateBlock.claim(view[SIZE : 2 * SIZE], SIZE)
    for start in (SIZE // 2, SIZE + 1, 2 * SIZE - 1, 1):
        with pytest.raises(ta.InvalidArgument):
            StateBlock.claim(view[start:], SIZE)
    before = StateBlock.claim(view[:SIZE], SIZE)  # ends exactly where middle starts
    after = StateBlock.claim(view[2 * SIZE :], SIZE)  # starts exactly where middle ends
    last = StateBlock.claim(view[3 * SIZE :], SIZE)
    for block in (middle, before, after, last):
        block.release()
    view.release()


def test_release_lets_a_bytearray_be_resized() -> None:
    arena = bytearray(SIZE)
    block = StateBlock.claim(arena, SIZE)
    with pytest.raises(BufferError):
        arena.extend(b"0")  # the live layer still holds the memory
    block.release()
    arena.extend(b"0")  # released: the owner may resize it
    assert len(arena) == SIZE + 1
    StateBlock.claim(arena, SIZE).release()


def test_release_is_idempotent() -> None:
    block = StateBlock.claim(bytearray(SIZE), SIZE)
    block.release()
    block.release()
    assert "released" in repr(block)


def test_state_record_fits_the_header() -> None:
    assert STATE_RECORD.size <= HEADER_SIZE


def test_pool_exhaustion_and_release() -> None:
    pool = ta.StateBlockPool(2, SIZE)
    assert (pool.available, pool.in_use) == (2, 0)
    a = pool.acquire()
    b = pool.acquire()
    assert pool.available == 0
    assert pool.in_use == 2
    with pytest.raises(ta.OutOfStateBlocks) as info:
        pool.acquire()
    assert info.value.errno == errno.ENOMEM
    assert isinstance(info.value, MemoryError)
    assert "2/2" in repr(pool)
    a.release()
    assert pool.available == 1
    c = pool.acquire()
    b.release()
    c.release()
    c.release()  # a second release does not give the block back twice
    assert pool.available == 2
    assert pool.in_use == 0


def test_pool_blocks_are_disjoint_and_sized() -> None:
    pool = ta.StateBlockPool(3, SIZE)
    blocks = [pool.acquire() for _ in range(3)]
    for i, block in enumerate(blocks):
        assert block.view is not None
        assert block.view.nbytes == SIZE
        block.view[:] = bytes([i]) * SIZE
    for i, block in enumerate(blocks):
        assert block.view is not None
        assert bytes(block.view) == bytes([i]) * SIZE
        block.release()


def test_pool_block_claimed_once() -> None:
    pool = ta.StateBlockPool(1, SIZE)
    block = pool.acquire()
    assert StateBlock.claim(block, SIZE) is block
    with pytest.raises(ta.InvalidArgument, match="in use"):
        StateBlock.claim(block, SIZE)
    block.release()
    with pytest.raises(ta.InvalidArgument, match="released"):
        StateBlock.claim(block, SIZE)


def test_pool_block_too_small_for_the_layer() -> None:
    pool = ta.StateBlockPool(1, HEADER_SIZE)
    block = pool.acquire()
    with pytest.raises(ta.InvalidArgument, match="needs"):
        StateBlock.claim(block, SIZE)
    block.release()


@pytest.mark.parametrize(
    ("count", "size"),
    [(0, SIZE), (-1, SIZE), (True, SIZE), (1.0, SIZE), ("1", SIZE), (1, HEADER_SIZE - 1), (1, "x")],
)
def test_bad_pool_arguments(count: object, size: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        ta.StateBlockPool(count, size)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


def test_default_pool_block_size_is_tls_size() -> None:
    pool = ta.StateBlockPool(1)
    assert pool.size == ta.TLS_SIZE
    block = pool.acquire()
    assert block.size == ta.TLS_SIZE
    block.release()


def test_tls_size_holds_the_record_and_blocks_share_pages() -> None:
    assert ta.TLS_SIZE >= HEADER_SIZE >= STATE_RECORD.size
    assert mmap.PAGESIZE % ta.TLS_SIZE == 0  # an idle connection costs a slice of a page


def test_allocated_blocks_are_the_librarys_own() -> None:
    """Blocks for the non-``_mem`` calls skip the overlap registry, and release cleanly."""
    blocks = [StateBlock.allocate(ta.TLS_SIZE) for _ in range(3)]
    assert len({block._start for block in blocks}) == 3
    for block in blocks:
        assert block.view is not None
        assert block.view.nbytes == ta.TLS_SIZE
        block.release()
        block.release()  # idempotent
        assert block.released


def test_a_dropped_lease_does_not_pin_its_range() -> None:
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
