"""The status page in a real headless Chromium: it shows the sockets the test opened, and refreshes itself."""

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from engee_client import Agent
from lab.process import AgentProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
]


def chromium(profile: Path, *args: str) -> str:
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
def test_status_page_shows_the_sockets_in_chromium(agent_process: AgentProcess, agent: Agent, tmp_path: Path) -> None:
    udp = agent.Socket("AF_INET", "SOCK_DGRAM")
    udp.bind("127.0.0.1", 0)
    udp.connect(*udp.local_address)
    udp.send(b"twelve bytes")
    assert len(udp.receive(100)) == 12
    tcp = agent.Socket()
    tcp.bind("127.0.0.1", 0)
    tcp.listen(1)
    link = f"{agent_process.url}/?token={agent_process.token}"
    try:
        dom = chromium(tmp_path / "profile", "--dump-dom", link)
        screenshot = tmp_path / "status.png"
        chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,700", link)
    finally:
        udp.close()
        tcp.close()
    assert re.search(r'<tbody id="sockets" data-refreshed="\d+">', dom), "the page never refreshed its table"
    rows = re.findall(r"<tr>(.*?)</tr>", dom)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    host, port = udp.local_address
    assert [str(udp.descriptor), "SOCK_DGRAM", f"{host}:{port}", f"{host}:{port}", "owner", "12", "12"] in [
        row[:7] for row in cells
    ]
    assert any(row[:2] == [str(tcp.descriptor), "SOCK_STREAM"] for row in cells)
    assert "connected clients" in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_page_needs_the_token_and_cannot_act(agent_process: AgentProcess, agent: Agent) -> None:
    assert httpx.get(agent_process.url + "/").status_code == 401
    assert httpx.get(agent_process.url + "/?token=wrong").status_code == 401
    with httpx.Client(base_url=agent_process.url, follow_redirects=True) as browser:
        page = browser.get(f"/?token={agent_process.token}")
        assert page.status_code == 200 and "engee_token" in browser.cookies
        assert agent_process.token not in str(page.url)  # the token leaves the address bar
        assert browser.get("/v1/status").json()["principal"] == "owner"
        assert browser.post("/v1/socket", json={}).status_code == 401  # the cookie only looks
