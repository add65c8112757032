"""`python -m bench`: the seed loop and bulk transfers, through the agent (channel and HTTP), RPyC and direct.

Each on loopback, and again with the notebook 20 ms (round trip) from the agent, through a userspace
delay proxy (this kernel has no netem); and through a gateway the agent links out to.

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
from urllib.parse import urlsplit

import rpyc

from engee_client import Agent
from lab.process import AgentProcess, Relay

from .bare import BareEcho, seed_loop_bare
from .delay import DelayLine
from .peers import HOST, RpycServer
from .report import MIB, Floor, Workload, render, run_facts
from .workloads import (
    bulk_agent,
    bulk_sockets,
    lines_agent,
    lines_sockets,
    query_agent,
    query_sockets,
    receive_agent,
    receive_sockets,
    seed_loop_agent,
    seed_loop_sockets,
    values_agent,
)

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
    args.samples, args.lines = (250_000, 10_000) if args.quick else (1_000_000, 100_000)
    return args


def measure(workloads: list[tuple[Workload, dict[str, Callable[[], float]]]], runs: int) -> None:
    """One untimed warm-up of each, then `runs` rounds, the variants interleaved within each round."""
    for _, variants in workloads:
        for run in variants.values():
            run()
    for _ in range(runs):
        for workload, variants in workloads:
            for variant in workload.variants:
                workload.times[variant].append(variants[variant]())


DELAY = 0.010
"""One way, for the long-link workloads: a 20 ms round trip, a notebook in the cloud and a PC far away."""
LOOPBACK = ("channel", "http", "rpyc", "rpyc-bound", "direct")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run the cleanups below
    chunk = os.urandom(MIB)
    slow = max(10, args.messages // 20)
    bytes_ = args.chunks * MIB
    seed = Workload(
        "seed loop",
        f"{args.messages} UDP messages, send + receive(1000) each, checked; written as for local sockets, so "
        "RPyC looks up `send`/`recv` remotely on every call; rpyc-bound looks them up once before the loop; bare: "
        "each message there and back to a bare echo process (bench/bare.py), the floor of any design with the "
        "sockets in another process",
        args.messages,
        (*LOOPBACK, "bare"),
        floors=(
            Floor("floor: seed loop channel/rpyc <= 0.3", 0.3, lambda w: w.ratio("channel", "rpyc")),
            Floor("floor: seed loop http/rpyc <= 2.0", 2.0, lambda w: w.ratio("http", "rpyc")),
        ),
    )
    bulk = Workload(
        "bulk send",
        f"{args.chunks} MiB of random bytes over TCP in 1 MiB sends to a local sink, until the sink counted them all",
        bytes_,
        LOOPBACK,
        throughput=True,
        floors=(Floor("floor: bulk send channel/rpyc <= 0.5 (2x faster)", 0.5, lambda w: w.ratio("channel", "rpyc")),),
    )
    receive = Workload(
        "bulk receive",
        f"{args.chunks} MiB of random bytes over TCP from a local source in receive(1 MiB) calls",
        bytes_,
        ("channel", "http", "rpyc", "direct"),
        throughput=True,
        floors=(
            Floor("floor: bulk receive channel/rpyc <= 0.5 (2x faster)", 0.5, lambda w: w.ratio("channel", "rpyc")),
        ),
    )
    far_seed = Workload(
        "seed loop, 20 ms RTT",
        f"the seed loop, {slow} messages, with the notebook 10 ms each way from the agent (or the RPyC server)",
        slow,
        ("channel", "http", "rpyc", "rpyc-bound"),
        rtt=2 * DELAY,
        floors=(
            Floor(
                "floor: seed loop over 20 ms RTT, channel round trips/msg <= 1.2",
                1.2,
                lambda w: w.round_trips("channel"),
            ),
        ),
    )
    far_bulk = Workload(
        "bulk send, 20 ms RTT",
        "the bulk send with the notebook 10 ms each way from the agent; direct: a TCP stream through the same proxy",
        bytes_,
        ("channel", "http", "rpyc-bound", "direct"),
        throughput=True,
        rtt=2 * DELAY,
        floors=(
            Floor(
                "floor: bulk send over 20 ms RTT, channel/direct <= 2 (half the speed)",
                2.0,
                lambda w: w.ratio("channel", "direct"),
            ),
        ),
    )
    far_receive = Workload(
        "bulk receive, 20 ms RTT",
        "the bulk receive with the notebook 10 ms each way from the agent; direct: through the same proxy",
        bytes_,
        ("channel", "http", "rpyc", "direct"),
        throughput=True,
        rtt=2 * DELAY,
        floors=(
            Floor(
                "floor: bulk receive over 20 ms RTT, channel/direct <= 2 (half the speed)",
                2.0,
                lambda w: w.ratio("channel", "direct"),
            ),
        ),
    )
    relayed_seed = Workload(
        "seed loop, through a gateway",
        f"the seed loop, {args.messages} messages, with the agent linked to a gateway on loopback and the notebook "
        "calling it there by id; replicas: the agent linked to replica A, the notebook on replica B (NATS between); "
        "channel: the same loop straight to an agent",
        args.messages,
        ("channel", "gateway", "replicas"),
        floors=(
            Floor(
                "floor: seed loop through one gateway / direct channel <= 2",
                2.0,
                lambda w: w.ratio("gateway", "channel"),
            ),
            Floor(
                "floor: seed loop, agent on replica A, notebook on B / direct channel <= 3",
                3.0,
                lambda w: w.ratio("replicas", "channel"),
            ),
        ),
    )
    relayed_bulk = Workload(
        "bulk send, through a gateway",
        f"{args.chunks} MiB in 1 MiB sends through the gateway; channel: straight to an agent",
        bytes_,
        ("channel", "gateway"),
        throughput=True,
        floors=(
            Floor(
                "floor: bulk send through one gateway at >= 0.5 of direct", 2.0, lambda w: w.ratio("gateway", "channel")
            ),
        ),
    )
    query = Workload(
        "query",
        f"{args.messages} query() calls (a command line out, its answer line back) to an instrument-like TCP peer; "
        "direct: sendall and a socket file's readline",
        args.messages,
        ("channel", "http", "direct"),
    )
    far_query = Workload(
        "query, 20 ms RTT",
        f"{slow} queries with the notebook 10 ms each way from the agent; direct: through the same proxy",
        slow,
        ("channel", "http", "direct"),
        rtt=2 * DELAY,
        floors=(
            Floor("query over 20 ms RTT, channel round trips/query <= 1.2", 1.2, lambda w: w.round_trips("channel")),
        ),
    )
    values = Workload(
        "read_values",
        f"read_values({args.samples}, 'float32') from a TCP source; channel-receive: the same bytes in 1 MiB "
        "receives, converted in the notebook with struct",
        args.samples * 4,
        ("channel", "channel-receive", "http"),
        throughput=True,
    )
    lines = Workload(
        "on_data lines",
        f"{args.lines} lines of 14 bytes from a TCP source, each handed to an on_data callback; channel-read_line: a "
        "loop of read_line() instead; direct: a local socket file's readline",
        args.lines,
        ("channel", "channel-read_line", "direct"),
        per="lines",
        floors=(
            Floor(
                "goal: on_data >= 50,000 lines/s (µs a line <= 20)", 20.0, lambda w: w.median("channel") / w.units * 1e6
            ),
        ),
    )
    with ExitStack() as stack:
        agent_process = stack.enter_context(AgentProcess())
        relay = stack.enter_context(Relay())
        relayed = stack.enter_context(Agent(relay.url, token=relay.token, transport="channel"))
        pair = stack.enter_context(Relay(replicas=2))
        across = stack.enter_context(Agent(pair.url, token=pair.token, transport="channel"))
        url, token = agent_process.url, agent_process.token
        rpyc_server = stack.enter_context(RpycServer())
        bare = stack.enter_context(BareEcho())
        far_agent = stack.enter_context(DelayLine(agent_address(url), DELAY))
        far_rpyc = stack.enter_context(DelayLine((HOST, rpyc_server.port), DELAY))
        agents = {kind: stack.enter_context(Agent(url, token=token, transport=kind)) for kind in ("channel", "http")}
        far = {
            kind: stack.enter_context(Agent(far_agent.url_for("http"), token=token, transport=kind))
            for kind in ("channel", "http")
        }
        remote = stack.enter_context(closing(rpyc.classic.connect(HOST, rpyc_server.port))).modules.socket
        far_remote = stack.enter_context(closing(rpyc.classic.connect(HOST, far_rpyc.port))).modules.socket
        measure(
            [
                (
                    seed,
                    {
                        **{kind: partial(seed_loop_agent, agent, args.messages) for kind, agent in agents.items()},
                        "rpyc": partial(seed_loop_sockets, remote, args.messages),
                        "rpyc-bound": partial(seed_loop_sockets, remote, args.messages, bound=True),
                        "direct": partial(seed_loop_sockets, socket, args.messages),
                        "bare": partial(seed_loop_bare, bare.port, args.messages),
                    },
                ),
                (
                    bulk,
                    {
                        **{kind: partial(bulk_agent, agent, chunk, args.chunks) for kind, agent in agents.items()},
                        "rpyc": partial(bulk_sockets, remote, chunk, args.chunks),
                        "rpyc-bound": partial(bulk_sockets, remote, chunk, args.chunks, bound=True),
                        "direct": partial(bulk_sockets, socket, chunk, args.chunks),
                    },
                ),
                (
                    receive,
                    {
                        **{kind: partial(receive_agent, agent, chunk, args.chunks) for kind, agent in agents.items()},
                        "rpyc": partial(receive_sockets, remote, chunk, args.chunks),
                        "direct": partial(receive_sockets, socket, chunk, args.chunks),
                    },
                ),
                (
                    far_seed,
                    {
                        **{kind: partial(seed_loop_agent, agent, slow) for kind, agent in far.items()},
                        "rpyc": partial(seed_loop_sockets, far_remote, slow),
                        "rpyc-bound": partial(seed_loop_sockets, far_remote, slow, bound=True),
                    },
                ),
                (
                    far_bulk,
                    {
                        **{kind: partial(bulk_agent, agent, chunk, args.chunks) for kind, agent in far.items()},
                        "rpyc-bound": partial(bulk_sockets, far_remote, chunk, args.chunks, bound=True),
                        "direct": partial(bulk_sockets, socket, chunk, args.chunks, delay=DELAY),
                    },
                ),
                (
                    relayed_seed,
                    {
                        "channel": partial(seed_loop_agent, agents["channel"], args.messages),
                        "gateway": partial(seed_loop_agent, relayed, args.messages),
                        "replicas": partial(seed_loop_agent, across, args.messages),
                    },
                ),
                (
                    relayed_bulk,
                    {
                        "channel": partial(bulk_agent, agents["channel"], chunk, args.chunks),
                        "gateway": partial(bulk_agent, relayed, chunk, args.chunks),
                    },
                ),
                (
                    far_receive,
                    {
                        **{kind: partial(receive_agent, agent, chunk, args.chunks) for kind, agent in far.items()},
                        "rpyc": partial(receive_sockets, far_remote, chunk, args.chunks),
                        "direct": partial(receive_sockets, socket, chunk, args.chunks, delay=DELAY),
                    },
                ),
                (
                    query,
                    {
                        **{kind: partial(query_agent, agent, args.messages) for kind, agent in agents.items()},
                        "direct": partial(query_sockets, args.messages),
                    },
                ),
                (
                    far_query,
                    {
                        **{kind: partial(query_agent, agent, slow) for kind, agent in far.items()},
                        "direct": partial(query_sockets, slow, delay=DELAY),
                    },
                ),
                (
                    values,
                    {
                        "channel": partial(values_agent, agents["channel"], args.samples),
                        "channel-receive": partial(values_agent, agents["channel"], args.samples, convert_here=True),
                        "http": partial(values_agent, agents["http"], args.samples),
                    },
                ),
                (
                    lines,
                    {
                        "channel": partial(lines_agent, agents["channel"], args.lines),
                        "channel-read_line": partial(lines_agent, agents["channel"], args.lines, callbacks=False),
                        "direct": partial(lines_sockets, args.lines),
                    },
                ),
            ],
            args.runs,
        )
    workloads = [
        seed,
        bulk,
        receive,
        far_seed,
        far_bulk,
        far_receive,
        relayed_seed,
        relayed_bulk,
        query,
        far_query,
        values,
        lines,
    ]
    facts = {
        **run_facts("bench", argv, f", rpyc {rpyc.__version__}"),
        "method": f"median of {args.runs} runs after one warm-up; variants interleaved; times in seconds",
    }
    title = "engee-sockets bench: the agent (channel and HTTP) vs RPyC vs direct sockets"
    print(render(workloads, title, facts))
    RESULTS.write_text(render(workloads, title, facts, markdown=True))
    print(f"written to {RESULTS}")


def agent_address(url: str) -> tuple[str, int]:
    """The (host, port) an agent's URL names."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


if __name__ == "__main__":
    main()
