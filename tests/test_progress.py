"""Long transfers: progress shown with tqdm, and an interrupt that says how much went through and loses nothing."""

import os

import pytest

from engee_client import TransferInterrupted

from .conftest import Background, press_stop_after, recv_exactly

MIB = 1 << 20


def test_a_large_send_and_receive_show_their_progress(connected, capsys: pytest.CaptureFixture[str]) -> None:
    client, plain = connected
    payload = os.urandom(8 * MIB)
    reader = Background(recv_exactly, plain, len(payload))
    assert client.send(payload, progress=True) == len(payload)
    assert reader.join_result() == payload
    writer = Background(plain.sendall, payload[::-1])
    assert client.receive_exactly(len(payload), timeout=30, progress=True) == payload[::-1]
    writer.join_result()
    err = capsys.readouterr().err
    assert "send" in err and "receive_exactly" in err and "8.00M" in err


def test_a_small_transfer_shows_nothing(connected, capsys: pytest.CaptureFixture[str]) -> None:
    client, plain = connected
    client.send(b"x" * 1000)
    assert recv_exactly(plain, 1000) == b"x" * 1000
    plain.sendall(b"y" * 1000)
    assert client.receive_exactly(1000, timeout=10) == b"y" * 1000
    assert capsys.readouterr().err == ""


def test_an_interrupted_read_hands_over_what_came_and_the_socket_goes_on(connected) -> None:
    client, plain = connected
    payload = os.urandom(8 * MIB)
    plain.sendall(payload[: 3 * MIB + 1000])  # three whole pieces, and part of a fourth
    timer = press_stop_after(3.0)
    with pytest.raises(TransferInterrupted, match="interrupted after 3145728 of 8388608 bytes") as caught:
        client.receive_exactly(len(payload), progress=True)
    timer.join()
    assert caught.value.data == payload[: 3 * MIB] and caught.value.done == 3 * MIB
    writer = Background(plain.sendall, payload[3 * MIB + 1000 :])
    assert client.receive_exactly(5 * MIB, timeout=30) == payload[3 * MIB :]
    writer.join_result()  # the part piece stayed readable


def test_an_interrupted_send_says_how_much_went_out(connected) -> None:
    """The peer reads nothing, so the send stalls; interrupted, it says how much went out, and exactly that much
    (or one piece more) arrives once the peer reads; the socket goes on."""
    client, plain = connected
    payload = os.urandom(256 * MIB)
    timer = press_stop_after(2.0)
    with pytest.raises(TransferInterrupted, match="of 268435456 bytes went out") as caught:
        client.send(payload)
    timer.join()
    done = caught.value.done
    assert 0 < done < len(payload)

    def drain() -> bytes:  # the peer reads at last, up to the marker sent next
        got = bytearray()
        while not got.endswith(b"--and more"):
            chunk = plain.recv(MIB)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
        return bytes(got)

    reader = Background(drain)
    client.send(b"--and more")  # on HTTP it waits for the piece still in flight: the socket goes on after it
    client.flush()
    got = reader.join_result()
    arrived = len(got) - len(b"--and more")
    assert done <= arrived <= done + MIB
    assert got[:arrived] == payload[:arrived]
