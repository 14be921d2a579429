"""TermCore (sans-IO final-message protocol)."""

from __future__ import annotations

import errno

import pytest
from _core_helpers import state_of
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tlsattach._cores import END_OF_STREAM, TermCore
from trio_tlsattach._cores._common import StateMachine
from trio_tlsattach._cores.term import MAX_FINAL_MESSAGE, TRANSITIONS, TermEvent, TermState
from trio_tlsattach._errors import ConnectionBroken, InvalidArgument, SendAfterDone


def test_messages_pass_through_unchanged() -> None:
    core = TermCore(b"STOP")
    assert core.final_message == b"STOP"
    assert core.encode(b"hello") == b"hello"
    assert core.encode(bytearray(b"STOPX")) == b"STOPX"
    assert core.encode(memoryview(b"")) == b""
    assert core.receive(b"hello") == b"hello"
    assert core.receive(memoryview(b"STO")) == b"STO"
    assert core.state is TermState.OPEN
    assert not core.local_done
    assert not core.peer_done


def test_encode_refuses_the_final_message() -> None:
    core = TermCore(b"STOP")
    with pytest.raises(InvalidArgument) as info:
        core.encode(bytearray(b"STOP"))
    assert info.value.errno == errno.EINVAL
    assert core.state is TermState.OPEN


def test_send_done_then_receive_final() -> None:
    core = TermCore(b"STOP")
    assert core.send_done() == b"STOP"
    assert state_of(core) is TermState.SEND_DONE
    assert core.local_done
    with pytest.raises(SendAfterDone) as info:
        core.encode(b"more")
    assert info.value.errno == errno.EPIPE
    with pytest.raises(SendAfterDone):
        core.send_done()
    assert core.receive(b"still flowing") == b"still flowing"  # half-closed: receive goes on
    assert core.receive(b"STOP") is END_OF_STREAM
    assert state_of(core) is TermState.BOTH_DONE
    assert core.peer_done


def test_receive_final_then_send_done() -> None:
    core = TermCore(b"STOP")
    assert core.receive(b"STOP") is END_OF_STREAM
    assert state_of(core) is TermState.RECEIVE_DONE
    assert core.peer_done
    assert core.encode(b"reply") == b"reply"  # the send side is still open
    with pytest.raises(InvalidArgument, match="keep later messages"):
        core.receive(b"after the end")  # not the core's: the layer keeps it for detach
    core.receive_eof()  # the layer below ending after the final message is fine
    assert core.send_done() == b"STOP"
    assert state_of(core) is TermState.BOTH_DONE


def test_empty_final_message() -> None:
    core = TermCore(b"")
    assert core.encode(b"x") == b"x"
    with pytest.raises(InvalidArgument):
        core.encode(b"")
    assert core.receive(b"x") == b"x"
    assert core.receive(b"") is END_OF_STREAM


def test_eof_without_final_message_is_sticky_connection_broken() -> None:
    core = TermCore(b"STOP")
    assert core.receive(b"a") == b"a"
    with pytest.raises(ConnectionBroken) as info:
        core.receive_eof()
    assert info.value.errno == errno.ECONNRESET
    with pytest.raises(ConnectionBroken):
        core.receive_eof()
    with pytest.raises(ConnectionBroken):
        core.receive(b"STOP")
    assert core.encode(b"send side unaffected") == b"send side unaffected"
    assert core.send_done() == b"STOP"


@pytest.mark.parametrize(
    "final", ["STOP", None, 0, [b"x"], b"x" * (MAX_FINAL_MESSAGE + 1)], ids=repr
)
def test_bad_final_message(final: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        TermCore(final)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


def test_final_message_limits() -> None:
    assert TermCore(bytearray(b"x" * MAX_FINAL_MESSAGE)).final_message == b"x" * 32768
    assert type(TermCore(memoryview(b"END")).final_message) is bytes
    assert repr(TermCore(b"END")) == "<TermCore b'END' state=OPEN>"


def test_transition_table() -> None:
    for state in TermState:
        for event in TermEvent:
            machine = StateMachine(TRANSITIONS, state)
            if (state, event) in TRANSITIONS:
                assert machine.fire(event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(InvalidArgument, match="impossible transition"):
                    machine.fire(event)
    assert len(TRANSITIONS) == 4


@settings(deadline=None, max_examples=50)
@given(
    final=st.binary(max_size=4),
    messages=st.lists(st.binary(max_size=4), max_size=10),
)
def test_sender_and_receiver_agree(final: bytes, messages: list[bytes]) -> None:
    sender, receiver = TermCore(final), TermCore(final)
    sent = [m for m in messages if m != final]
    wire = [sender.encode(m) for m in sent] + [sender.send_done()]
    got = [receiver.receive(m) for m in wire]
    assert got == [*sent, END_OF_STREAM]
    assert receiver.peer_done
