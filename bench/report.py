"""The results as rows, rendered once as an aligned text table and once as markdown."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
AGENT = "channel"
"""The variant every ratio is of: the agent through its channel, the client's default."""


@dataclass(frozen=True)
class Floor:
    """A figure an issue holds the project to: `measure(workload)` at most `limit`."""

    text: str
    limit: float
    measure: Callable[[Workload], float]


@dataclass
class Workload:
    """One workload's timings (seconds per run) for each of its variants."""

    name: str
    detail: str
    units: int
    """Messages, or bytes when `throughput`, per run."""
    variants: tuple[str, ...]
    throughput: bool = False
    rtt: float = 0.0
    """The round trip of the delayed link it runs through (0: loopback); then rates are in round trips."""
    floors: tuple[Floor, ...] = ()
    per: str = ""
    """What a unit is, to show the rate as units a second (lines/s) rather than µs a message."""
    times: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = {variant: [] for variant in self.variants}

    def median(self, variant: str) -> float:
        return statistics.median(self.times[variant])

    def ratio(self, variant: str, reference: str) -> float:
        return self.median(variant) / self.median(reference)

    def round_trips(self, variant: str) -> float:
        """Round trips of the delayed link per message."""
        return self.median(variant) / self.units / self.rtt

    def rate(self, variant: str) -> str:
        if self.throughput:
            return f"{self.units / MIB / self.median(variant):.1f} MiB/s"
        if self.rtt:
            return f"{self.round_trips(variant):.2f} RTT/msg"
        if self.per:
            return f"{self.units / self.median(variant):,.0f} {self.per}/s"
        return f"{self.median(variant) / self.units * 1e6:.1f} µs/msg"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def render(workloads: list[Workload], title: str, facts: dict[str, str], markdown: bool = False) -> str:
    """The whole report: title, facts (date, machine, command), timings, ratios, floors."""
    timings = [
        [
            workload.name if variant == workload.variants[0] else "",
            variant,
            f"{workload.median(variant):.4f}",
            f"{min(workload.times[variant]):.4f}",
            f"{max(workload.times[variant]):.4f}",
            str(len(workload.times[variant])),
            workload.rate(variant),
        ]
        for workload in workloads
        for variant in workload.variants
    ]
    ratios = [
        [workload.name, f"{AGENT}/{other}", f"{workload.ratio(AGENT, other):.3f}"]
        for workload in workloads
        for other in workload.variants
        if other != AGENT
    ]
    floors = [
        f"{floor.text}   measured {value:.2f}   {'PASS' if value <= floor.limit else 'MISS'}"
        for workload in workloads
        for floor in workload.floors
        for value in [floor.measure(workload)]
    ]
    bullet = "- " if markdown else "  "
    lines = [f"# {title}" if markdown else title, ""]
    lines += [
        f"{bullet}{name}: " + (f"`{value}`" if markdown and name == "command" else value)
        for name, value in facts.items()
    ] + [""]
    lines += [f"{bullet}{workload.name}: {workload.detail}" for workload in workloads] + [""]
    lines += _table(["workload", "variant", "median s", "min s", "max s", "runs", "median rate"], timings, markdown)
    lines += [""] + _table(["workload", "ratio", "time ratio"], ratios, markdown) + [""]
    lines += [f"{bullet}{floor}" for floor in floors]
    return "\n".join(lines) + "\n"


def run_facts(module: str, argv: list[str] | None, python_extra: str = "") -> dict[str, str]:
    """Date, machine, Python and the exact command of a run, for the top of a report."""
    python = Path(sys.executable)
    if python.is_relative_to(Path.cwd()):
        python = python.relative_to(Path.cwd())
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"nproc {len(os.sched_getaffinity(0))}, {platform.system()} {platform.machine()}",
        "python": f"{platform.python_version()} ({platform.python_implementation()}){python_extra}",
        "command": shlex.join([str(python), "-m", module, *(sys.argv[1:] if argv is None else argv)]),
    }
