"""One event loop, many sockets: a call waiting on one socket never holds up another."""

from engee_client import Agent
from lab.process import AgentProcess

from .conftest import Background


def test_blocked_receive_does_not_delay_other_sockets(agent_process: AgentProcess, agent: Agent) -> None:
    other_client = Agent(agent_process.url, token=agent_process.token)
    with (
        agent.Socket("AF_INET", "SOCK_DGRAM") as quiet,
        agent.Socket("AF_INET", "SOCK_DGRAM") as busy,
        agent.Socket("AF_INET", "SOCK_DGRAM") as sender,
    ):
        quiet.bind("127.0.0.1", 0)
        busy.bind("127.0.0.1", 0)
        blocked = Background(quiet.receive, 100)  # no timeout: blocks in 20 s waits on the agent
        sender.connect(*busy.local_address)
        busy_from_other_client = other_client.Socket("AF_INET", "SOCK_DGRAM", busy.descriptor)
        for i in range(20):
            sender.send(f"datagram {i}".encode())
            # If the agent served one call at a time, this wait would queue behind the blocked
            # receive's 20 s wait and end empty.
            result = busy_from_other_client.receive(100, timeout=5)
            assert result is not None and bytes(result) == f"datagram {i}".encode()
        assert blocked.is_alive()
        sender.connect(*quiet.local_address)
        sender.send(b"wake up")
        assert bytes(blocked.join_result()) == b"wake up"
    other_client.disconnect()
