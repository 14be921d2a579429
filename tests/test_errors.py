"""The errno table: every class is an OSError with libdill's errno and the Trio/builtin class."""

import errno
import pickle

import pytest
import trio

import trio_tlsattach as ta

TABLE = [
    (ta.BadHandle, errno.EBADF, (trio.ClosedResourceError,)),
    (ta.ConnectionBroken, errno.ECONNRESET, (trio.BrokenResourceError, ConnectionResetError)),
    (ta.InvalidArgument, errno.EINVAL, (ValueError,)),
    (ta.InvalidArgumentType, errno.EINVAL, (ValueError, TypeError, ta.InvalidArgument)),
    (ta.OutOfStateBlocks, errno.ENOMEM, (MemoryError,)),
    (ta.NotSupported, errno.ENOTSUP, ()),
    (ta.ProtocolMismatch, errno.EPROTO, (TypeError,)),
    (ta.TLSError, errno.EPROTO, (trio.BrokenResourceError,)),
    (ta.DeadlineExceeded, errno.ETIMEDOUT, (trio.TooSlowError, TimeoutError)),
    (ta.SendAfterDone, errno.EPIPE, (trio.ClosedResourceError, BrokenPipeError)),
    (ta.MessageTooLarge, errno.EMSGSIZE, (ValueError,)),
]


@pytest.mark.parametrize(("cls", "code", "also"), TABLE)
def test_class_errno_and_bases(cls: type[ta.StackError], code: int, also: tuple[type, ...]) -> None:
    exc = cls("what happened")
    assert isinstance(exc, OSError)
    assert isinstance(exc, ta.StackError)
    assert exc.errno == code
    assert exc.strerror == "what happened"
    assert str(exc) == f"[Errno {code}] what happened"
    for base in also:
        assert isinstance(exc, base)
    with pytest.raises(cls) as info:
        raise exc
    assert info.value.errno == code


@pytest.mark.parametrize(("cls", "code", "also"), TABLE)
def test_pickles(cls: type[ta.StackError], code: int, also: tuple[type, ...]) -> None:
    copy = pickle.loads(pickle.dumps(cls("x")))
    assert type(copy) is cls
    assert copy.errno == code
    assert copy.strerror == "x"


def test_default_message_is_the_errno_name() -> None:
    assert ta.BadHandle().strerror == "EBADF"


def test_tls_error_reason_and_alert() -> None:
    exc = ta.TLSError("handshake failed", reason="TLSV1_ALERT_UNKNOWN_CA")
    assert exc.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert exc.alert == "unknown_ca"
    assert ta.TLSError("x", reason="WRONG_VERSION_NUMBER").alert is None
    assert ta.TLSError("x").alert is None


def test_cancelled_is_not_wrapped() -> None:
    # ECANCELED has no class: Trio's Cancelled is never an OSError of ours.
    assert not issubclass(trio.Cancelled, OSError)
