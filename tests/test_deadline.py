"""Deadline semantics: FOREVER, IMMEDIATE (do what can be done, never wait), absolute times."""

import errno
import math

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach._deadline import check_deadline


def test_forever_and_numbers() -> None:
    assert check_deadline(ta.FOREVER) == math.inf
    assert check_deadline(-1.0) == math.inf
    assert check_deadline(math.inf) == math.inf
    assert check_deadline(ta.IMMEDIATE) == 0.0
    assert check_deadline(12.5) == 12.5


@pytest.mark.parametrize("bad", [-2, -0.5, float("nan"), -math.inf])
def test_bad_values_are_einval(bad: float) -> None:
    with pytest.raises(ta.InvalidArgument) as info:
        check_deadline(bad)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("bad", ["1", None, True, b"0"])
def test_bad_types_are_einval_and_typeerror(bad: object) -> None:
    with pytest.raises(TypeError) as info:
        check_deadline(bad)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL  # type: ignore[attr-defined]


async def test_now_and_after(autojump_clock: trio.testing.MockClock) -> None:
    assert ta.now() == trio.current_time()
    assert ta.after(2.5) == trio.current_time() + 2.5
    with pytest.raises(ta.InvalidArgument):
        ta.after(-1)
    with pytest.raises(ta.InvalidArgument):
        ta.after(float("nan"))


async def test_immediate_succeeds_when_data_is_there() -> None:
    a, b = ta.socketpair()
    async with a, b:
        await a.send_all(b"ready")
        await trio.testing.wait_all_tasks_blocked()
        assert await b.receive_some(10, deadline=ta.IMMEDIATE) == b"ready"
        await a.send_all(b"again")
        buf = bytearray(10)
        assert await b.receive_into(buf, deadline=ta.IMMEDIATE) == 5


async def test_immediate_and_past_deadlines_fail_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ta.socketpair()
    async with a, b:
        for deadline in (ta.IMMEDIATE, ta.now() - 1 if ta.now() >= 1 else 0):
            start = trio.current_time()
            with pytest.raises(ta.DeadlineExceeded) as info:
                await b.receive_some(10, deadline=deadline)
            assert info.value.errno == errno.ETIMEDOUT
            assert trio.current_time() == start


async def test_deadline_fires_at_the_exact_time(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:
        start = trio.current_time()
        with pytest.raises(ta.DeadlineExceeded):
            await b.receive_some(10, deadline=ta.after(7))
        assert trio.current_time() == pytest.approx(start + 7)
        # Only waiting: the stream is still usable.
        await a.send_all(b"late")
        assert await b.receive_some(10) == b"late"


async def test_outer_cancellation_passes_untouched(autojump_clock: trio.testing.MockClock) -> None:
    a, b = ta.socketpair()
    async with a, b:
        with trio.move_on_after(3) as scope:
            await b.receive_some(10, deadline=ta.after(100))
        assert scope.cancelled_caught
        await a.send_all(b"ok")
        assert await b.receive_some(10) == b"ok"
