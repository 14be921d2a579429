"""The errno table: every class is an OSError with libdill's errno and the Trio/builtin class."""

import errno
import pickle
import ssl

import pytest
import trio
import trio.testing

import trio_tlsattach as ta
from trio_tlsattach import _errors

# (class, errno, what else it is) -- DESIGN.md's table.
TABLE = [
    (ta.BadHandle, errno.EBADF, (trio.ClosedResourceError,)),
    (ta.ConnectionBroken, errno.ECONNRESET, (trio.BrokenResourceError, ConnectionResetError)),
    (ta.InvalidArgument, errno.EINVAL, (ValueError,)),
    (ta.InvalidArgumentType, errno.EINVAL, (ValueError, TypeError, ta.InvalidArgument)),
    (ta.OutOfStateBlocks, errno.ENOMEM, (MemoryError,)),
    (ta.NotSupported, errno.ENOTSUP, ()),
    (ta.ProtocolMismatch, errno.EPROTO, (TypeError,)),
    (ta.ProtocolViolation, errno.EPROTO, (trio.BrokenResourceError,)),
    (ta.TLSError, errno.EPROTO, (trio.BrokenResourceError, ta.ProtocolViolation)),
    (ta.DeadlineExceeded, errno.ETIMEDOUT, (trio.TooSlowError, TimeoutError)),
    (ta.SendAfterDone, errno.EPIPE, (trio.ClosedResourceError, BrokenPipeError)),
    (ta.MessageTooLarge, errno.EMSGSIZE, (ValueError,)),
]
CLASSES = [row[0] for row in TABLE]


def test_the_table_covers_every_error_class() -> None:
    exported = {getattr(_errors, name) for name in _errors.__all__} - {ta.StackError}
    assert exported == set(CLASSES)


@pytest.mark.parametrize(("cls", "code", "also"), TABLE, ids=[c.__name__ for c in CLASSES])
def test_class_errno_and_bases(cls: type[ta.StackError], code: int, also: tuple[type, ...]) -> None:
    exc = cls("what happened")
    assert isinstance(exc, OSError)
    assert isinstance(exc, ta.StackError)
    assert exc.errno == code
    assert exc.strerror == "what happened"
    assert str(exc) == f"[Errno {code}] what happened"
    for base in also:
        assert isinstance(exc, base), f"{cls.__name__} is not a {base.__name__}"
    with pytest.raises(cls) as info:
        raise exc
    assert info.value.errno == code


@pytest.mark.parametrize(("cls", "code", "also"), TABLE, ids=[c.__name__ for c in CLASSES])
def test_caught_by_what_a_trio_user_catches(
    cls: type[ta.StackError], code: int, also: tuple[type, ...]
) -> None:
    for base in (OSError, *also):
        with pytest.raises(base):
            raise cls("x")


@pytest.mark.parametrize(("cls", "code", "also"), TABLE, ids=[c.__name__ for c in CLASSES])
def test_pickles(cls: type[ta.StackError], code: int, also: tuple[type, ...]) -> None:
    copy = pickle.loads(pickle.dumps(cls("x")))
    assert type(copy) is cls
    assert copy.errno == code
    assert copy.strerror == "x"
    assert str(copy) == str(cls("x"))


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_default_message_is_the_errno_name(cls: type[ta.StackError]) -> None:
    exc = cls()
    assert exc.errno is not None
    assert exc.strerror == errno.errorcode[exc.errno]


def test_not_a_generic_oserror_errno_lookup() -> None:
    # OSError(errno, ...) would turn ECONNRESET into ConnectionResetError; ours keep their class.
    assert type(ta.ConnectionBroken("x")) is ta.ConnectionBroken
    assert type(OSError(errno.ECONNRESET, "x")) is ConnectionResetError


def test_tls_error_reason_and_alert() -> None:
    exc = ta.TLSError("handshake failed", reason="TLSV1_ALERT_UNKNOWN_CA")
    assert exc.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert exc.alert == "unknown_ca"
    assert ta.TLSError("x", reason="SSLV3_ALERT_BAD_CERTIFICATE").alert == "bad_certificate"
    assert ta.TLSError("x", reason="WRONG_VERSION_NUMBER").alert is None
    assert ta.TLSError("x").reason is None
    assert ta.TLSError("x").alert is None


def test_tls_error_keeps_reason_through_pickle() -> None:
    copy = pickle.loads(pickle.dumps(ta.TLSError("bad", reason="TLSV1_ALERT_UNKNOWN_CA")))
    assert copy.reason == "TLSV1_ALERT_UNKNOWN_CA"
    assert copy.alert == "unknown_ca"
    assert copy.errno == errno.EPROTO


def test_tls_error_from_ssl() -> None:
    cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    cause.reason = "WRONG_VERSION_NUMBER"
    exc = ta.TLSError.from_ssl(cause, "handshake failed")
    assert exc.reason == "WRONG_VERSION_NUMBER"
    assert exc.strerror == "handshake failed: WRONG_VERSION_NUMBER"
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.reason = "CERTIFICATE_VERIFY_FAILED"
    verify.verify_message = "unable to get local issuer certificate"
    exc = ta.TLSError.from_ssl(verify, "handshake failed")
    assert exc.strerror == "handshake failed: unable to get local issuer certificate"
    assert exc.reason == "CERTIFICATE_VERIFY_FAILED"


def test_cancelled_is_not_wrapped() -> None:
    # ECANCELED has no class: Trio's Cancelled is never an OSError of ours.
    assert not issubclass(trio.Cancelled, OSError)
    assert not any(issubclass(cls, trio.Cancelled) for cls in CLASSES)


async def test_cancelled_passes_through_a_transport_untouched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = ta.socketpair()
    async with a, b:
        with trio.CancelScope() as scope:
            scope.cancel()
            await b.receive_some(10)  # a wrapped Cancelled would escape this scope
        assert scope.cancelled_caught
        with trio.move_on_after(3) as scope:
            await b.receive_some(10, deadline=ta.after(100))  # cancelled while waiting
        assert scope.cancelled_caught


@pytest.mark.parametrize(
    "cls", [ta.TLSError, ta.WebSocketError, ta.HTTPProtocolError, ta.SOCKS5ProtocolError]
)
def test_every_layers_protocol_error_is_a_protocol_violation(cls: type[ta.StackError]) -> None:
    exc = cls("the peer broke the protocol")
    assert isinstance(exc, ta.ProtocolViolation)
    assert isinstance(exc, trio.BrokenResourceError)  # what a Trio user catches for a bad peer
    assert exc.errno == errno.EPROTO
