"""`python -m bench.channels`: many channels at once, each making many calls, against one agent.

Each client is an `AsyncAgent` over the channel, all on one event loop in this process; every call
is an `is_open` of one of its own sockets, timed. Prints the calls, the errors and the latency
percentiles. Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from engee_client import AsyncAgent
from lab.process import AgentProcess


async def client(url: str, token: str, calls: int, latencies: list[float]) -> int:
    """`calls` timed calls over one channel; the number that failed."""
    errors = 0
    async with AsyncAgent(url, token=token, transport="channel") as agent:
        sock = await agent.Socket("AF_INET", "SOCK_DGRAM")
        for _ in range(calls):
            start = time.perf_counter()
            try:
                if not await sock.is_open():
                    errors += 1
            except Exception:  # counted: the figure is how many
                errors += 1
            latencies.append(time.perf_counter() - start)
        await sock.close()
    return errors


async def run(url: str, token: str, channels: int, calls: int) -> tuple[int, list[float], float]:
    latencies: list[float] = []
    start = time.perf_counter()
    errors = await asyncio.gather(*(client(url, token, calls, latencies) for _ in range(channels)))
    return sum(errors), latencies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.channels", description=__doc__)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--calls", type=int, default=1000, help="calls per channel")
    args = parser.parse_args()
    config = "[limits]\nsockets_per_principal = 1024\n"
    with AgentProcess("--config", write_config(config)) as agent:
        errors, latencies, seconds = asyncio.run(run(agent.url, agent.token, args.channels, args.calls))
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{args.channels} channels x {args.calls} calls: {len(latencies)} calls in {seconds:.1f} s "
        f"({len(latencies) / seconds:.0f} calls/s), {errors} errors"
    )
    print(
        f"latency ms: median {statistics.median(latencies) * 1e3:.2f}, p90 {cuts[89] * 1e3:.2f}, "
        f"p99 {cuts[98] * 1e3:.2f}, max {max(latencies) * 1e3:.2f}"
    )


def write_config(text: str) -> str:
    """A config file with `text`, for the agent: one client may hold a socket per channel."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as file:
        file.write(text)
    return file.name


if __name__ == "__main__":
    main()
