"""Deadline semantics: FOREVER, IMMEDIATE (do what can be done, never wait), absolute times."""

import errno
import math

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach._deadline import check_deadline, waiting

BAD_VALUES = [-2, -0.5, -1.5, float("nan"), -math.inf]
BAD_TYPES = ["x", "1", None, True, False, b"0", [1]]


def test_constants() -> None:
    assert ta.FOREVER == -1
    assert ta.IMMEDIATE == 0


def test_forever_and_numbers() -> None:
    assert check_deadline(ta.FOREVER) == math.inf
    assert check_deadline(-1.0) == math.inf
    assert check_deadline(math.inf) == math.inf
    assert check_deadline(ta.IMMEDIATE) == 0.0
    assert check_deadline(12.5) == 12.5
    assert isinstance(check_deadline(3), float)


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_bad_values_are_einval(bad: float) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        check_deadline(bad)
    assert info.value.errno == errno.EINVAL
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", BAD_TYPES)
def test_bad_types_are_einval_and_typeerror(bad: object) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        check_deadline(bad)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("bad", [-2, float("nan"), "x", True])
async def test_bad_deadlines_are_refused_before_anything_happens(bad: object) -> None:
    a, b = ta.socketpair()
    async with a, b:
        await a.send_all(b"data")
        for call in (
            lambda: b.receive_some(10, deadline=bad),  # type: ignore[arg-type]
            lambda: b.receive_into(bytearray(10), deadline=bad),  # type: ignore[arg-type]
            lambda: a.send_all(b"more", deadline=bad),  # type: ignore[arg-type]
            lambda: a.send_eof(deadline=bad),  # type: ignore[arg-type]
        ):
            with pytest.raises(ta.InvalidArgument) as info:
                await call()
            assert info.value.errno == errno.EINVAL
        # Nothing was consumed, sent or shut down.
        assert await b.receive_some(10) == b"data"
        await a.send_all(b"still open")
        assert await b.receive_some(20) == b"still open"


async def test_now_and_after(autojump_clock: trio.testing.MockClock) -> None:
    await trio.sleep(10)
    assert ta.now() == trio.current_time() == 10
    assert ta.after(2.5) == 12.5
    assert ta.after(0) == ta.now()
    for bad in (-1, -0.1, float("nan"), "1", None, True):
        with pytest.raises(ta.InvalidArgument) as info:
            ta.after(bad)  # type: ignore[arg-type]
        assert info.value.errno == errno.EINVAL


async def test_immediate_succeeds_when_data_is_there() -> None:
    a, b = ta.socketpair()
    async with a, b:
        await a.send_all(b"ready")
        await trio.testing.wait_all_tasks_blocked()
        assert await b.receive_some(10, deadline=ta.IMMEDIATE) == b"ready"
        await a.send_all(b"again")
        buf = bytearray(10)
        assert await b.receive_into(buf, deadline=ta.IMMEDIATE) == 5
        assert buf[:5] == b"again"
        await a.send_eof()
        assert await b.receive_some(10, deadline=ta.IMMEDIATE) == b""  # EOF is there too


async def test_a_past_deadline_is_immediate(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:
        await trio.sleep(100)
        past = ta.now() - 50
        await a.send_all(b"there")
        assert await b.receive_some(10, deadline=past) == b"there"  # no wait needed: fine
        start = trio.current_time()
        with pytest.raises(ta.DeadlineExceeded) as info:
            await b.receive_some(10, deadline=past)
        assert info.value.errno == errno.ETIMEDOUT
        assert trio.current_time() == start


@pytest.mark.parametrize("method", ["receive_some", "receive_into"])
async def test_immediate_without_data_fails_without_waiting(
    autojump_clock: trio.testing.MockClock,
    transport_pair: tuple[ta.ByteStream, ta.ByteStream],
    method: str,
) -> None:
    a, b = transport_pair
    await trio.sleep(1)
    start = trio.current_time()
    call = (
        b.receive_some(10, deadline=ta.IMMEDIATE)
        if method == "receive_some"
        else b.receive_into(bytearray(10), deadline=ta.IMMEDIATE)
    )
    with pytest.raises(ta.DeadlineExceeded) as info:
        await call
    assert info.value.errno == errno.ETIMEDOUT
    assert isinstance(info.value, trio.TooSlowError)
    assert trio.current_time() == start
    # Only waiting: the stream is still usable.
    await a.send_all(b"later")
    assert await b.receive_some(10) == b"later"


async def test_deadline_fires_at_the_exact_time(
    autojump_clock: trio.testing.MockClock,
    transport_pair: tuple[ta.ByteStream, ta.ByteStream],
) -> None:
    a, b = transport_pair
    start = trio.current_time()
    deadline = ta.after(7)
    with pytest.raises(ta.DeadlineExceeded):
        await b.receive_some(10, deadline=deadline)
    assert trio.current_time() == deadline == start + 7
    # Only waiting: the stream is still usable, both ways.
    await a.send_all(b"late")
    assert await b.receive_some(10) == b"late"
    await b.send_all(b"back")
    assert await a.receive_some(10) == b"back"


async def test_data_before_the_deadline_wins(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:

        async def send_later() -> None:
            await trio.sleep(3)
            await a.send_all(b"in time")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            assert await b.receive_some(10, deadline=ta.after(5)) == b"in time"
        assert trio.current_time() == 3


async def test_forever_waits_as_long_as_it_takes(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:

        async def send_much_later() -> None:
            await trio.sleep(86400 * 365)
            await a.send_all(b"a year later")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_much_later)
            for forever in (ta.FOREVER, math.inf, -1.0):
                if forever is not ta.FOREVER:
                    nursery.start_soon(send_much_later)
                assert await b.receive_some(20, deadline=forever) == b"a year later"


async def test_outer_cancellation_passes_untouched(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:
        with trio.move_on_after(3) as scope:
            await b.receive_some(10, deadline=ta.after(100))
        assert scope.cancelled_caught
        assert trio.current_time() == 3
        await a.send_all(b"ok")
        assert await b.receive_some(10) == b"ok"


async def test_waiting_helper(autojump_clock: trio.testing.MockClock) -> None:
    with waiting(math.inf):
        await trio.sleep(1000)  # no deadline: nothing is built, nothing fires
    start = trio.current_time()
    with (
        pytest.raises(ta.DeadlineExceeded, match="connect: deadline reached"),
        waiting(start + 2, "connect"),
    ):
        await trio.sleep(10)
    assert trio.current_time() == start + 2
    with pytest.raises(ta.DeadlineExceeded), waiting(0.0):
        await trio.lowlevel.checkpoint()  # a passed deadline fires at the first checkpoint
