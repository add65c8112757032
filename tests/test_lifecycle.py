"""The agent's life: a graceful stop that ends waiting calls clearly and exits 0."""

import errno
import os
import socket
import time

import pytest

from engee_client import Agent
from engee_client.channel import WINDOW_BYTES
from lab.process import AgentProcess

from .conftest import Background


def test_sigterm_ends_waiting_calls_closes_sockets_and_exits_zero(tmp_path) -> None:
    process = AgentProcess(log_dir=str(tmp_path)).start()
    try:
        agent = Agent(process.url, token=process.token)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            sender = agent.Socket()
            sender.connect(*listener.getsockname())
            peer, _ = listener.accept()
            # A peer that never reads: the send blocks once the buffers are full, the kernel's and, on the
            # channel, the window of pipelined sends.
            with peer:
                sending = Background(sender.send, os.urandom(WINDOW_BYTES + (16 << 20)))
                quiet = agent.Socket("AF_INET", "SOCK_DGRAM")
                quiet.bind("127.0.0.1", 0)
                receiving = Background(quiet.receive, 100)
                time.sleep(0.5)  # let both calls reach the agent and start waiting there
                assert sending.is_alive() and receiving.is_alive()
                assert process.stop() == 0
                for call in (sending, receiving):
                    with pytest.raises(OSError, match="the agent is shutting down") as caught:
                        call.join_result()
                    assert caught.value.errno == errno.EBADF
                peer.settimeout(10)
                while peer.recv(1 << 20):  # the agent closed its end
                    pass
    finally:
        process.stop()
