"""`python -m bench.soak`: load and soak one real agent; not timed in CI (`make soak`, a few minutes).

A  sessions: concurrent client sessions (own `Agent`, own HTTP connection, own thread, spread over a
   few client processes), each an echo loop over a UDP pair through the agent for the duration; every
   call timed, every error counted.
B  sockets:  many UDP sockets open at once in the agent; its RSS and open files before, during, after.
C  calls:    many calls in a row from one client on one UDP pair; RSS and open files at checkpoints.

Writes the report to stdout and to bench/soak-results.md. Only loopback is used; the agent is a child
process, stopped at the end even on error. Exits 1 on any error, any leaked file, or growth beyond noise.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from engee_client import Agent
from lab.process import AgentProcess

from .peers import HOST
from .report import run_facts

RESULTS = Path(__file__).with_name("soak-results.md")
MIB = 1 << 20
RSS_NOISE = 4 * MIB
"""Part C's RSS may move this much between its first and last checkpoint and still count as flat."""
RECEIVE_TIMEOUT = 10.0
"""A datagram not back by then counts as an error instead of hanging the run."""
MAX_ERRORS = 100
"""A session stops after this many errors, so a dead agent does not flood the report."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 5 s, 10 sessions in 2 processes, 1,000 sockets, 20,000 calls unless given",
    )
    parser.add_argument("--duration", type=float, metavar="S", help="seconds of part A's echo loops (default 60)")
    parser.add_argument("--sessions", type=int, metavar="N", help="concurrent client sessions in part A (default 100)")
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="client processes part A's sessions are spread over, each a thread per session "
        "(default 4, 2 with --quick)",
    )
    parser.add_argument("--sockets", type=int, metavar="N", help="sockets open at once in part B (default 10,000)")
    parser.add_argument("--calls", type=int, metavar="N", help="calls in a row in part C (default 200,000)")
    args = parser.parse_args(argv)
    defaults = (5.0, 10, 2, 1_000, 20_000) if args.quick else (60.0, 100, 4, 10_000, 200_000)
    for name, default in zip(("duration", "sessions", "processes", "sockets", "calls"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    args.calls += args.calls % 2  # send and receive alternate
    return args


# --- the agent, seen from outside ---------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """The agent process's resident memory, open files and CPU seconds at one moment."""

    rss: int
    fds: int
    cpu: float

    @staticmethod
    def of(pid: int) -> Usage:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        return Usage(rss, len(os.listdir(f"/proc/{pid}/fd")), cpu)

    @staticmethod
    def settled(pid: int, timeout: float = 5.0) -> Usage:
        """Once the open-file count holds still for 0.2 s: closed HTTP connections take a moment to go."""
        deadline = time.monotonic() + timeout
        usage = Usage.of(pid)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            again = Usage.of(pid)
            if again.fds == usage.fds:
                return again
            usage = again
        return usage

    def show(self) -> str:
        return f"RSS {self.rss / MIB:.1f} MiB, {self.fds} open files"


def _signed_mib(delta: int) -> str:
    return f"{delta / MIB:+.2f} MiB"


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


@dataclass
class Section:
    title: str
    detail: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    verdicts: list[tuple[str, bool]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))

    def check(self, text: str, ok: bool) -> None:
        self.verdicts.append((text, ok))


# --- A: concurrent sessions ---------------------------------------------------------------------


@dataclass
class Session:
    """One client session's echo loop: its call latencies (send and receive apart), loop time and errors."""

    index: int
    sends: list[float] = field(default_factory=list)
    receives: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def run(self, url: str, token: str, ready: threading.Barrier, go: threading.Event, stop: threading.Event) -> None:
        try:
            with (
                Agent(url, token=token) as agent,
                agent.Socket("AF_INET", "SOCK_DGRAM") as server,
                agent.Socket("AF_INET", "SOCK_DGRAM") as client,
            ):
                server.bind(HOST, 0)
                client.connect(*server.local_address)
                ready.wait()
                go.wait()
                self._loop(server, client, stop)
        except threading.BrokenBarrierError:
            self.errors.append("another session failed to set up")
        except Exception as exc:  # counted and reported, never raised: the other sessions go on
            self.errors.append(f"{type(exc).__name__}: {exc}")
            ready.abort()

    def _loop(self, server, client, stop: threading.Event) -> None:
        clock, n = time.perf_counter, 0
        began = clock()
        while not stop.is_set() and len(self.errors) < MAX_ERRORS:
            n += 1
            message = f"session {self.index} message {n}".encode()
            try:
                start = clock()
                client.send(message)
                sent = clock()
                got = server.receive(1000, timeout=RECEIVE_TIMEOUT)
                received = clock()
            except Exception as exc:
                self.errors.append(f"message {n}: {type(exc).__name__}: {exc}")
                continue
            self.sends.append(sent - start)
            self.receives.append(received - sent)
            if got is None or bytes(got) != message:
                self.errors.append(f"message {n}: received {got!r}, sent {message!r}")
        self.seconds = clock() - began


def client_process(url: str, token: str, indices: list[int], duration: float, everyone, results) -> None:
    """One client process: a thread per session; the loops start once every process has set its sessions up."""
    ready, go, stop = threading.Barrier(len(indices) + 1), threading.Event(), threading.Event()
    runs = [Session(i) for i in indices]
    threads = [threading.Thread(target=run.run, args=(url, token, ready, go, stop)) for run in runs]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
        everyone.wait(timeout=120)
    except threading.BrokenBarrierError:  # a session failed to set up; its error is in its Session
        everyone.abort()
        stop.set()
    go.set()
    stop.wait(duration)
    stop.set()
    for thread in threads:
        thread.join()
    results.put(
        ([(run.index, run.sends, run.receives, run.errors, run.seconds) for run in runs], time.process_time() - cpu)
    )  # plain tuples: the class pickles under the child's module name


def sessions(process: AgentProcess, count: int, duration: float, processes: int) -> Section:
    processes = min(processes, count)
    context = multiprocessing.get_context("spawn")
    everyone, results = context.Barrier(processes + 1), context.Queue()
    clients = [
        context.Process(
            target=client_process,
            name=f"soak-client-{p}",
            daemon=True,
            args=(process.url, process.token, list(range(p, count, processes)), duration, everyone, results),
        )
        for p in range(processes)
    ]
    before = Usage.settled(process.pid)
    for client in clients:
        client.start()
    runs, client_cpu, errors = [], 0.0, []
    try:
        try:
            everyone.wait(timeout=180)
        except threading.BrokenBarrierError:
            pass  # the sessions' errors tell why
        time.sleep(duration / 2)
        during = Usage.of(process.pid)
        for _ in clients:
            part, cpu = results.get(timeout=duration + 180)
            runs += [Session(*fields) for fields in part]
            client_cpu += cpu
    except queue.Empty:
        errors.append("a client process sent no results")
    finally:
        for client in clients:
            client.join(10)
            if client.is_alive():
                client.kill()
    after = Usage.settled(process.pid)
    runs.sort(key=lambda run: run.index)
    sends = sorted(t for run in runs for t in run.sends)
    receives = sorted(t for run in runs for t in run.receives)
    both = sorted(sends + receives)
    errors += [f"session {run.index}: {error}" for run in runs for error in run.errors]
    section = Section(
        "A. concurrent sessions",
        f"{count} client sessions, each its own Agent (own HTTP connection) in its own thread, spread over "
        f"{processes} client processes; each a UDP pair on the agent (server bound to {HOST}:0, client connected "
        f"to it) and an echo loop for {duration:g} s: send a small message, receive(1000, timeout="
        f"{RECEIVE_TIMEOUT:g}), compare. Latency is per call (send and receive are one HTTP call each), measured "
        "in the client around the library call.",
    )
    if both:
        seconds = statistics.mean(run.seconds for run in runs)
        rate = sum(len(run.receives) / run.seconds for run in runs if run.seconds)
        section.add("calls", f"{len(both):,} ({len(sends):,} send + {len(receives):,} receive) in {seconds:.1f} s")
        section.add("rate", f"{2 * rate:,.0f} calls/s, {rate:,.0f} round trips/s")
        section.add(
            "per session",
            f"{min(len(run.receives) for run in runs):,} .. {max(len(run.receives) for run in runs):,} round trips",
        )
        for name, values in (("all calls", both), ("send", sends), ("receive", receives)):
            section.add(
                f"latency {name}",
                f"p50 {_ms(percentile(values, 50))}, p99 {_ms(percentile(values, 99))}, max {_ms(values[-1])}",
            )
    section.add(
        "agent CPU",
        f"{after.cpu - before.cpu:.1f} s ({(after.cpu - before.cpu) / duration:.0%} of one core "
        f"over {duration:g} s; setup and teardown included)",
    )
    section.add("client CPU", f"{client_cpu:.1f} s, all {processes} client processes")
    section.add("agent", f"before: {before.show()}; halfway: {during.show()}; after: {after.show()}")
    section.add("errors", f"{len(errors)}" + (f"; first: {'; '.join(errors[:5])}" if errors else ""))
    section.check("zero errors", not errors and len(runs) == count)
    section.check("open files back to before once the sessions ended", after.fds <= before.fds)
    return section


# --- B: many sockets at once --------------------------------------------------------------------


def many_sockets(process: AgentProcess, count: int) -> Section:
    before = Usage.settled(process.pid)
    opened = []
    with Agent(process.url, token=process.token) as agent:
        began = time.perf_counter()
        try:
            for _ in range(count):
                sock = agent.Socket("AF_INET", "SOCK_DGRAM")
                opened.append(sock)
                sock.bind(HOST, 0)
            open_time = time.perf_counter() - began
            during = Usage.settled(process.pid)
            listed = len(agent.sockets())
            after_listing = Usage.of(process.pid)
        finally:
            began = time.perf_counter()
            for sock in opened:
                sock.close()
            close_time = time.perf_counter() - began
    after = Usage.settled(process.pid)
    section = Section(
        "B. sockets open at once",
        f"{count:,} UDP sockets opened and bound to {HOST}:0 through one client, one after another, "
        "then all closed. Memory is the agent process's VmRSS; the kernel's socket buffers are not in it.",
    )
    section.add("before", before.show())
    section.add(f"with {count:,} open", during.show())
    section.add(
        "memory per socket",
        f"{(during.rss - before.rss) / count / 1024:.2f} KiB (ΔRSS {_signed_mib(during.rss - before.rss)} / {count:,})",
    )
    section.add("open files per socket", f"{(during.fds - before.fds) / count:.3f} (Δ {during.fds - before.fds:+,})")
    section.add(
        "after listing them",
        f"{after_listing.show()}: one sockets() call, {listed:,} entries (RSS "
        f"{_signed_mib(after_listing.rss - during.rss)}: building the answer; freed, "
        "not given back to the OS)",
    )
    section.add(
        "after closing all",
        after.show() + f" (RSS {_signed_mib(after.rss - before.rss)}, files {after.fds - before.fds:+} vs before)",
    )
    section.add(
        "time",
        f"open + bind {open_time:.1f} s ({count / open_time:,.0f} sockets/s), "
        f"close {close_time:.1f} s ({count / close_time:,.0f}/s)",
    )
    section.check(f"the agent lists all {count:,} sockets", listed >= count)
    section.check(f"{count:,} more open files while open", during.fds - before.fds >= count)
    section.check("no open file left after closing", after.fds <= before.fds)
    return section


# --- C: many calls in a row ---------------------------------------------------------------------


def many_calls(process: AgentProcess, calls: int, checkpoints: int = 4) -> Section:
    with (
        Agent(process.url, token=process.token) as agent,
        agent.Socket("AF_INET", "SOCK_DGRAM") as server,
        agent.Socket("AF_INET", "SOCK_DGRAM") as client,
    ):
        server.bind(HOST, 0)
        client.connect(*server.local_address)

        def echo(rounds: int, first: int) -> None:
            for n in range(first, first + rounds):
                message = f"call {n}".encode()
                client.send(message)
                got = server.receive(1000, timeout=RECEIVE_TIMEOUT)
                if got is None or bytes(got) != message:
                    raise RuntimeError(f"round trip {n}: received {got!r}, sent {message!r}")

        echo(1000, -1000)  # warm-up, not counted: first-use allocations are not growth
        marks = [(0, Usage.settled(process.pid))]
        began, done = time.perf_counter(), 0
        for k in range(1, checkpoints + 1):
            target = calls * k // checkpoints // 2 * 2
            echo((target - done) // 2, done // 2)
            done = target
            marks.append((done, Usage.of(process.pid)))
        elapsed = time.perf_counter() - began
    section = Section(
        "C. calls in a row",
        f"{calls:,} calls from one client on one UDP pair, alternating send and receive(1000) with "
        "the echo checked, after 1,000 warm-up round trips; the agent measured at each checkpoint.",
    )
    for done, usage in marks:
        section.add(f"after {done:,} calls", f"{usage.show()}, CPU {usage.cpu:.1f} s")
    first, last = marks[0][1], marks[-1][1]
    steady = marks[1][1]
    section.add(
        "growth",
        f"RSS {_signed_mib(last.rss - first.rss)} over the run, "
        f"{_signed_mib(last.rss - steady.rss)} from the first checkpoint to the last; "
        f"open files {last.fds - first.fds:+}",
    )
    section.add(
        "rate",
        f"{calls / elapsed:,.0f} calls/s ({elapsed / calls * 1e6:.0f} µs per call, in {elapsed:.1f} s); "
        f"agent CPU {(last.cpu - first.cpu) / calls * 1e6:.0f} µs per call",
    )
    section.check(
        f"RSS flat: first checkpoint to last within {RSS_NOISE // MIB} MiB", abs(last.rss - steady.rss) <= RSS_NOISE
    )
    section.check("open files flat", last.fds == first.fds)
    return section


# --- the run and its report ---------------------------------------------------------------------


def config_text(args: argparse.Namespace) -> str:
    sockets = args.sockets + 2 * args.sessions + 100
    return (
        f"[limits]\nsockets_per_principal = {sockets}\nsockets_total = {sockets}\n"
        f"waits_total = {max(256, 2 * args.sessions)}\nidle_timeout = 0\n"
    )


def agent_log_problems(output: str) -> list[str]:
    """Lines of the agent's output that are neither the banner nor audit lines: warnings, errors, tracebacks."""
    return [
        line
        for line in output.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line) and not line.startswith("time=")
    ]


def render(sections: list[Section], facts: dict[str, str], markdown: bool = False) -> str:
    bullet = "- " if markdown else "  "
    title = "engee-sockets soak: sessions, sockets, calls"
    lines = [f"# {title}" if markdown else title, ""]
    lines += [
        f"{bullet}{name}: " + (f"`{value}`" if markdown and name in ("command", "config") else value)
        for name, value in facts.items()
    ]
    for section in sections:
        lines += ["", f"## {section.title}" if markdown else section.title, "", section.detail, ""]
        if markdown:
            lines += ["| measure | value |", "| --- | --- |"] + [
                f"| {name} | {value} |" for name, value in section.rows
            ]
        else:
            width = max(len(name) for name, _ in section.rows)
            lines += [f"  {name.ljust(width)}  {value}" for name, value in section.rows]
        lines += [""] + [f"{bullet}{'PASS' if ok else 'FAIL'}: {text}" for text, ok in section.verdicts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run the cleanups below
    started, load = time.perf_counter(), os.getloadavg()[0]
    sections: list[Section] = []
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="engee-soak-"))
        config = Path(workdir, "soak.toml")
        config.write_text(config_text(args))
        process = stack.enter_context(AgentProcess("--config", str(config)))
        print(f"agent pid {process.pid} at {process.url}; log {process.log_path}", flush=True)
        with Agent(process.url, token=process.token) as warm_up:
            warm_up.info()  # the event loop's own files (epoll, eventfd, pipes) exist from the first call on
        for name, part in (
            ("A", lambda: sessions(process, args.sessions, args.duration, args.processes)),
            ("B", lambda: many_sockets(process, args.sockets)),
            ("C", lambda: many_calls(process, args.calls)),
        ):
            part_began = time.perf_counter()
            sections.append(part())
            print(f"part {name} done in {time.perf_counter() - part_began:.1f} s", flush=True)
        alive = process.alive()
        problems = agent_log_problems(process.output())
        exit_code = process.stop()
        agent = Section("Agent", "The agent's own output (besides banner and audit lines) and its exit.")
        agent.add(
            "warnings and errors logged",
            f"{len(problems)}" + (f"; first: {' | '.join(problems[:3])}" if problems else ""),
        )
        agent.add("exit", f"alive to the end: {alive}; exit code after SIGTERM: {exit_code}")
        agent.check("no warning or error logged", not problems)
        agent.check("alive to the end, exit 0", alive and exit_code == 0)
        sections.append(agent)
        ok = all(ok for section in sections for _, ok in section.verdicts)
        if not ok:
            stack.pop_all()  # keep the agent's log for a look; the process is already stopped
            print(f"agent log kept: {process.log_path}")
    facts = {
        **run_facts("bench.soak", argv),
        "config": " ".join(config_text(args).split()),
        "load": f"1-minute load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end (other work slows it)",
        "run time": f"{time.perf_counter() - started:.0f} s",
        "result": "PASS" if ok else "FAIL",
    }
    print()
    print(render(sections, facts))
    RESULTS.write_text(render(sections, facts, markdown=True))
    print(f"written to {RESULTS}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
