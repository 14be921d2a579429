"""Absolute deadlines with libdill's meaning, on Trio's clock.

Theory of operation
-------------------
A deadline is a point in time on :func:`trio.current_time`'s clock (seconds), so
:class:`trio.testing.MockClock` drives every timeout. Two values are special, as in libdill:

* ``FOREVER`` (``-1``, also ``math.inf``): wait as long as it takes.
* ``IMMEDIATE`` (``0``) or any point already past: *do whatever can be done without waiting*,
  then fail with :class:`DeadlineExceeded` if that was not enough.

Any other negative number, NaN, a bool or a non-number is :class:`InvalidArgument`.

The second rule is why operations are written in two steps: first the non-blocking attempt
(outside any cancel scope), then, only if it could not finish, the *waiting* part inside
:func:`waiting`. ``trio.fail_at(past)`` alone would cancel at the first checkpoint even when
the data is already buffered; doing the non-blocking step first is what lets ``IMMEDIATE``
succeed when it can. It is also the fast path: no cancel scope is built when nothing waits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Final

import trio

from ._errors import DeadlineExceeded, InvalidArgument, InvalidArgumentType

__all__ = ["FOREVER", "IMMEDIATE", "after", "check_deadline", "now", "waiting"]

FOREVER: Final = -1
"""Deadline meaning "no deadline": block as long as the operation needs."""

IMMEDIATE: Final = 0
"""Deadline meaning "do what can be done now, without waiting"."""


def now() -> float:
    """The current time on the deadline clock (Trio's clock), in seconds.

    >>> deadline = now() + 5   # five seconds from now; same as after(5)
    """
    return trio.current_time()


def after(seconds: float) -> float:
    """The absolute deadline ``seconds`` from now.

    ``await tls.receive_some(deadline=after(2.5))`` gives up 2.5 s from now.
    A negative or NaN duration is :class:`InvalidArgument`.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise InvalidArgument(f"after() takes a duration >= 0, not {seconds!r}")
    return trio.current_time() + seconds


def check_deadline(deadline: float) -> float:
    """Validate a deadline and return it as a float, ``math.inf`` for FOREVER.

    Called once at the top of every public operation, before anything is done.
    """
    # The common cases first: this runs on every call, at every layer.
    if type(deadline) is float and deadline >= 0:  # also inf; NaN fails ">="
        return deadline
    if deadline == -1 and type(deadline) is int:
        return math.inf
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise InvalidArgumentType(f"deadline must be a number, not {type(deadline).__name__}")
    if deadline == FOREVER or deadline == math.inf:
        return math.inf
    if not deadline >= 0:  # also catches NaN
        raise InvalidArgument(f"deadline must be >= 0, FOREVER (-1) or math.inf, not {deadline!r}")
    return float(deadline)


_NO_DEADLINE: Final = nullcontext()


def waiting(deadline: float, what: str = "operation") -> AbstractContextManager[None]:
    """Scope the *waiting* part of an operation by a checked deadline.

    ``deadline`` must come from :func:`check_deadline`. A passed deadline (including
    ``IMMEDIATE``) cancels at the first checkpoint inside, so nothing waits; the result is
    :class:`DeadlineExceeded`. Trio's own cancellation from outer scopes passes through untouched.
    Without a deadline this builds nothing (one shared no-op context): it is on every wait.
    """
    if deadline == math.inf:
        return _NO_DEADLINE
    return _fail_at(deadline, what)


@contextmanager
def _fail_at(deadline: float, what: str) -> Iterator[None]:
    try:
        with trio.fail_at(deadline):
            yield
    except DeadlineExceeded:
        raise
    except trio.TooSlowError:
        raise DeadlineExceeded(f"{what}: deadline reached") from None
