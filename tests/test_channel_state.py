"""The client's channel state as pure rules: resending, pipelined windows and failures, with no network."""

from engee_client.channel import ChannelState
from engee_client.transport import Call
from protocol import METHODS, CallId, ErrorDetail
from protocol import models as m
from protocol.channel import ErrorFrame, HelloFrame, ResultFrame, encode

INFO = m.AgentInfo(agent_id="a", boot_id="b1", version="1", protocol_version=1, methods=["send"])


def send(seq: int, size: int, descriptor: int = 3) -> Call:
    return Call(METHODS.send, METHODS.send.request(descriptor=descriptor, data=b"x" * size), CallId("s", seq, seq - 1))


def test_unanswered_calls_are_sent_again_in_order_and_answered_ones_are_not() -> None:
    state = ChannelState()
    state.received(encode(HelloFrame(INFO.model_dump())))
    frames = {
        seq: state.frame(Call(METHODS.is_open, METHODS.is_open.request(descriptor=1), CallId("s", seq)))
        for seq in (3, 1, 2)
    }
    assert state.unanswered() == [frames[1], frames[2], frames[3]]
    state.received(encode(ResultFrame(2, {"open": True})))
    reply = state.answer(2)
    assert reply is not None and reply.outcome == m.IsOpenResponse(open=True) and reply.boot == "b1"
    state.forget(3)
    assert state.unanswered() == [frames[1]]
    state.received(encode(ResultFrame(2, {"open": True})))  # a second answer: nobody waits for it
    assert state.answer(2) is None


def test_pipelined_sends_fill_a_window_and_a_failure_is_kept_for_the_next_call() -> None:
    state = ChannelState(window_bytes=100, window_calls=3)
    assert state.room(3, 1000)  # one send always fits an empty window
    for seq in (1, 2):
        state.frame(send(seq, 40))
        assert state.post(send(seq, 40), 3).outcome == m.SendResponse(sent=40)
    assert not state.room(3, 40) and state.room(3, 20) and state.room(4, 1000)
    assert state.in_flight(3) == 2 and state.in_flight() == 2
    failed = ErrorDetail(code="os_error", message="Connection reset by peer", errno_name="ECONNRESET", method="send")
    state.received(encode(ErrorFrame(1, failed.model_dump(exclude_none=True))))
    state.received(encode(ResultFrame(2, {"sent": 40})))
    assert state.answer(1) is None and state.answer(2) is None  # a pipelined send's answer is no caller's
    assert state.in_flight(3) == 0 and state.room(3, 100)
    failure = state.failure(3)
    assert failure is not None and failure.errno_name == "ECONNRESET"
    assert "an earlier send of 40 bytes (call 1) failed" in failure.message
    assert state.failure(3) is None  # raised once
