"""How agents, sockets and results show themselves in Jupyter (HTML) and in a terminal (text)."""

import asyncio

from engee_client import Agent, AsyncAgent, ResultUIntList
from engee_client.display import preview, where
from lab.process import AgentProcess


class Printer:
    """IPython's pretty printer, as far as _repr_pretty_ uses it."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, text: str) -> None:
        self.out += text


def pretty(obj: object) -> str:
    printer = Printer()
    obj._repr_pretty_(printer, False)  # type: ignore[attr-defined]
    return printer.out


def test_an_agent_shows_where_it_is_and_its_sockets(agent: Agent, transport: str) -> None:
    with agent.Socket("AF_INET", "SOCK_DGRAM") as first, agent.Socket("AF_INET", "SOCK_DGRAM") as second:
        first.bind("127.0.0.1", 0)
        second.connect(*first.local_address)
        second.send(b"Hello, lab\x00\x01")
        received = first.receive(100, timeout=10)
        text, page = pretty(agent), agent._repr_html_()
        for shown in (text, page):
            assert agent.info().agent_id in shown and transport in shown and "round trip" in shown
            assert f"{first.local_address[0]}:{first.local_address[1]}" in shown
        assert f"open sockets: {len(agent.sockets())}" in text
        assert page.count("<tr>") >= 2 and "<table>" in page
        socket_text = pretty(first)
        assert "bytes in: 12" in socket_text and "state: open" in socket_text
        assert "<td>12</td>" in first._repr_html_()
        assert repr(received) == (
            f"<ResultUIntList 12 bytes from 127.0.0.1:{second.local_address[1]}: "
            "48 65 6c 6c 6f 2c 20 6c 61 62 00 01  |Hello, lab..|>"
        )
        assert received._repr_html_().startswith("<code>&lt;ResultUIntList 12 bytes")
    assert "state: closed" in pretty(first)  # closed: shown from what the client knows, no call


def test_a_long_result_shows_a_short_preview() -> None:
    result = ResultUIntList(bytes(range(256)) * 4)
    assert len(repr(result)) < 120 and "1024 bytes" in repr(result) and repr(result).endswith("...|>")
    assert preview(b"") == "(empty)"


def test_an_unreachable_agent_says_so() -> None:
    lost = Agent("http://127.0.0.1:9", token="t", retry_for=0.2, transport="http")
    assert "unreachable" in pretty(lost) and "unreachable" in lost._repr_html_()


def test_a_gateway_url_reads_as_agent_and_gateway() -> None:
    assert where("https://gw.example:8800/agents/lab-7") == "agent lab-7 through gateway https://gw.example:8800"
    assert where("http://127.0.0.1:8700") == "http://127.0.0.1:8700"


def test_an_async_agent_shows_what_it_knows_without_a_call(agent_process: AgentProcess) -> None:
    async def main() -> None:
        async with AsyncAgent(agent_process.url, token=agent_process.token, transport="channel") as agent:
            sock = await agent.Socket("AF_INET", "SOCK_DGRAM")
            await sock.bind("127.0.0.1", 0)
            shown = pretty(agent)
            assert (await agent.info()).agent_id in shown and "channel" in shown
            assert "state: open" in pretty(sock) and str(sock.local_address[1]) in sock._repr_html_()
            await sock.close()

    asyncio.run(main())
