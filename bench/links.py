"""`python -m bench.links`: how many idle agent links one gateway replica holds, and the memory each costs.

Starts a gateway that knows N agents, then N agents' links in this process, each the real link code
(`agent.link.AgentLink`) serving a minimal app, on one event loop. Once the gateway's status says
every agent is online, it reads the gateway's resident memory and reports it per link, with the
time it took them all to link. Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent.link import AgentLink
from lab.process import GatewayProcess


async def idle_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What the simulated agents serve: nothing comes while they are idle."""
    raise RuntimeError("an idle agent got a request")


def resident(pid: int) -> int:
    """The resident memory of process `pid`, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def run(count: int) -> None:
    key, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="engee-links-"))
    agents = [f"a{index}" for index in range(count)]
    config = folder / "gateway.toml"
    config.write_text(
        "".join(f'[agents.{agent}]\nkey = "{key}"\n' for agent in agents)
        + f'[users.watcher]\ntoken = "{token}"\nagents = [{", ".join(repr(agent) for agent in agents)}]\n'
    )
    with GatewayProcess(str(config), log_dir=str(folder)) as gateway:
        before = resident(gateway.pid)
        started = time.monotonic()
        links = [AgentLink(idle_app, (gateway.url,), agent, key) for agent in agents]
        tasks = [asyncio.ensure_future(link.run()) for link in links]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
            while True:
                status = (await client.get(f"{gateway.url}/v1/status")).json()
                online = sum(row["online"] for row in status["agents"])
                if online == count:
                    break
                if time.monotonic() - started > 300:
                    raise RuntimeError(f"only {online} of {count} agents linked")
                await asyncio.sleep(0.5)
        linked_in = time.monotonic() - started
        await asyncio.sleep(2)  # idle for a while: heartbeats only
        after = resident(gateway.pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    per_link = (after - before) / count
    print(
        f"{count} idle agent links held by one gateway replica: all linked in {linked_in:.1f} s; gateway RSS "
        f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB, {per_link / 1024:.1f} KiB per link"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.links", description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1000, help="how many agents link (default 1000)")
    logging.getLogger("engee.agent").setLevel(logging.ERROR)  # not a line for each link
    asyncio.run(run(parser.parse_args().links))


if __name__ == "__main__":
    main()
