"""`python -m bench`: the seed loop and a bulk send, through the agent, through RPyC and direct, side by side.

Writes the report to stdout and to bench/results.md. Only loopback is used; the agent and the
rpyc_classic server are child processes, stopped at the end even on error.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path

import rpyc

from engee_client import Agent
from lab.process import AgentProcess

from .peers import HOST, RpycServer
from .report import MIB, VARIANTS, Workload, render, run_facts
from .workloads import bulk_agent, bulk_sockets, seed_loop_agent, seed_loop_sockets

RESULTS = Path(__file__).with_name("results.md")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 5, 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 100 messages, 8 MiB, 2 runs unless --runs")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.messages, args.chunks = (100, 8) if args.quick else (1000, 64)
    return args


def measure(workloads: list[tuple[Workload, dict[str, Callable[[], float]]]], runs: int) -> None:
    """One untimed warm-up of each, then `runs` rounds, the variants interleaved within each round."""
    for _, variants in workloads:
        for run in variants.values():
            run()
    for _ in range(runs):
        for workload, variants in workloads:
            for variant in VARIANTS:
                workload.times[variant].append(variants[variant]())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run the cleanups below
    chunk = os.urandom(MIB)
    seed = Workload(
        "seed loop",
        f"{args.messages} UDP messages, send + receive(1000) each, checked; written as "
        "for local sockets, so RPyC looks up `send`/`recv` remotely on every call; "
        "rpyc-bound looks them up once before the loop",
        args.messages,
    )
    bulk = Workload(
        "bulk send",
        f"{args.chunks} MiB of random bytes over TCP in 1 MiB sends to a local sink, until the sink counted them all",
        args.chunks * MIB,
        throughput=True,
    )
    with ExitStack() as stack:
        agent_process = stack.enter_context(AgentProcess())
        agent = stack.enter_context(Agent(agent_process.url, token=agent_process.token))
        rpyc_server = stack.enter_context(RpycServer())
        remote = stack.enter_context(closing(rpyc.classic.connect(HOST, rpyc_server.port))).modules.socket
        measure(
            [
                (
                    seed,
                    {
                        "agent": partial(seed_loop_agent, agent, args.messages),
                        "rpyc": partial(seed_loop_sockets, remote, args.messages),
                        "rpyc-bound": partial(seed_loop_sockets, remote, args.messages, bound=True),
                        "direct": partial(seed_loop_sockets, socket, args.messages),
                    },
                ),
                (
                    bulk,
                    {
                        "agent": partial(bulk_agent, agent, chunk, args.chunks),
                        "rpyc": partial(bulk_sockets, remote, chunk, args.chunks),
                        "rpyc-bound": partial(bulk_sockets, remote, chunk, args.chunks, bound=True),
                        "direct": partial(bulk_sockets, socket, chunk, args.chunks),
                    },
                ),
            ],
            args.runs,
        )
    facts = {
        **run_facts("bench", argv, f", rpyc {rpyc.__version__}"),
        "method": f"median of {args.runs} runs after one warm-up; variants interleaved; times in seconds",
    }
    title = "engee-sockets bench: agent vs RPyC vs direct sockets"
    print(render([seed, bulk], title, facts))
    RESULTS.write_text(render([seed, bulk], title, facts, markdown=True))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
