"""The client's channel state as pure rules: resending, pipelined windows and failures, streams, with no network."""

import pytest

from engee_client.channel import ChannelState
from engee_client.transport import Call
from protocol import METHODS, CallId, ErrorDetail
from protocol import models as m
from protocol.channel import (
    DataFrame,
    EndFrame,
    ErrorFrame,
    FrameError,
    GrantFrame,
    HelloFrame,
    ResultFrame,
    decode,
    encode,
)

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


def receive(seq: int, bufsize: int, descriptor: int = 5, wait: float = 0.0) -> Call:
    request = METHODS.receive.request(descriptor=descriptor, bufsize=bufsize, wait=wait)
    return Call(METHODS.receive, request, CallId("s", seq, seq - 1))


def run(flow):  # type: ignore[no-untyped-def]
    """Drive a flow with no link: the frames it sends, and its reply (every wait ends at once, in vain)."""
    sent, value = [], None
    try:
        step = next(flow)
        while True:
            if isinstance(step, bytes):
                sent.append(decode(step))
                value = True
            else:
                value = step.ready()
            step = flow.send(value)
    except StopIteration as done:
        return sent, done.value


def test_a_stream_answers_receives_from_what_arrived_and_grants_again_as_they_take_it() -> None:
    state = ChannelState(read_ahead=160)
    state.received(encode(HelloFrame(INFO.model_dump())))
    sent, reply = run(state.exchange(receive(1, 10)))
    assert sent == [GrantFrame(5, 0, 160)] and reply.outcome == m.ReceiveResponse(pending=True)
    state.received(encode(DataFrame(5, 0, b"a" * 30)) + encode(DataFrame(5, 30, b"b" * 30)))
    sent, reply = run(state.exchange(receive(2, 15)))
    assert reply.outcome == m.ReceiveResponse(data=b"a" * 15) and sent == []  # under an eighth of the window
    sent, reply = run(state.exchange(receive(3, 25)))
    assert reply.outcome == m.ReceiveResponse(data=b"a" * 15 + b"b" * 10)
    assert sent == [GrantFrame(5, 40, 200)]  # 40 taken: the window opens again from there
    sent, reply = run(state.exchange(receive(4, 100)))
    assert reply.outcome == m.ReceiveResponse(data=b"b" * 20) and sent == [GrantFrame(5, 60, 220)]


def test_a_stream_drops_what_a_new_link_sends_again_and_refuses_a_gap() -> None:
    state = ChannelState()
    state.received(encode(HelloFrame(INFO.model_dump())))
    run(state.exchange(receive(1, 100)))
    state.received(encode(DataFrame(5, 0, b"0123456789")))
    assert decode(state.unanswered()[-1]) == GrantFrame(5, 0, state.read_ahead)  # no receive took any yet
    state.received(encode(DataFrame(5, 0, b"0123456789")))  # so the agent sends it all again after a cut
    state.received(encode(DataFrame(5, 10, b"ABCDE")))
    _, reply = run(state.exchange(receive(2, 100)))
    assert reply.outcome == m.ReceiveResponse(data=b"0123456789ABCDE")  # once each, in order
    with pytest.raises(FrameError, match="skips from 15 to 20"):
        state.received(encode(DataFrame(5, 20, b"lost?")))


def test_a_streamed_datagram_is_one_receive_cut_to_bufsize_and_an_end_is_eof() -> None:
    state = ChannelState()
    state.received(encode(HelloFrame(INFO.model_dump())))
    run(state.exchange(receive(1, 4)))
    run(state.exchange(receive(2, 100, descriptor=6)))
    state.received(encode(DataFrame(5, 0, b"0123456789", ["127.0.0.1", 9000])))
    _, reply = run(state.exchange(receive(3, 4)))
    assert reply.outcome == m.ReceiveResponse(data=b"0123", peer=m.Address(host="127.0.0.1", port=9000), truncated=True)
    state.received(encode(EndFrame(6, 0)))
    for seq in (4, 5):  # and so is every later receive, as a local socket's
        assert run(state.exchange(receive(seq, 100, descriptor=6)))[1].outcome == m.ReceiveResponse(eof=True)
