"""The results as rows, rendered once as an aligned text table and once as markdown."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
VARIANTS = ("agent", "rpyc", "rpyc-bound", "direct")
FLOORS = {
    "seed loop": (2.0, "floor: seed loop agent/rpyc <= 2.0"),
    "bulk send": (1.0, "floor: bulk agent/rpyc <= 1.0 (time ratio; agent at least as fast)"),
}


@dataclass
class Workload:
    """One workload's timings (seconds per run) for each variant."""

    name: str
    detail: str
    units: int
    """Messages, or bytes when `throughput`, per run."""
    throughput: bool = False
    times: dict[str, list[float]] = field(default_factory=lambda: {variant: [] for variant in VARIANTS})

    def median(self, variant: str) -> float:
        return statistics.median(self.times[variant])

    def ratio(self, variant: str, reference: str) -> float:
        return self.median(variant) / self.median(reference)

    def rate(self, variant: str) -> str:
        if self.throughput:
            return f"{self.units / MIB / self.median(variant):.1f} MiB/s"
        return f"{self.median(variant) / self.units * 1e6:.1f} µs/msg"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in (header, *rows)]


def render(workloads: list[Workload], title: str, facts: dict[str, str], markdown: bool = False) -> str:
    """The whole report: title, facts (date, machine, command), timings, ratios, floors."""
    timings = [
        [
            workload.name if variant == VARIANTS[0] else "",
            variant,
            f"{workload.median(variant):.4f}",
            f"{min(workload.times[variant]):.4f}",
            f"{max(workload.times[variant]):.4f}",
            str(len(workload.times[variant])),
            workload.rate(variant),
        ]
        for workload in workloads
        for variant in VARIANTS
    ]
    ratios = [
        [workload.name, *(f"{workload.ratio('agent', other):.2f}" for other in VARIANTS[1:])] for workload in workloads
    ]
    floors = []
    for workload in workloads:
        limit, text = FLOORS[workload.name]
        ratio = workload.ratio("agent", "rpyc")
        floors.append(f"{text}   measured {ratio:.2f}   {'PASS' if ratio <= limit else 'MISS'}")
    bullet = "- " if markdown else "  "
    lines = [f"# {title}" if markdown else title, ""]
    lines += [
        f"{bullet}{name}: " + (f"`{value}`" if markdown and name == "command" else value)
        for name, value in facts.items()
    ] + [""]
    lines += [f"{bullet}{workload.name}: {workload.detail}" for workload in workloads] + [""]
    lines += _table(["workload", "variant", "median s", "min s", "max s", "runs", "median rate"], timings, markdown)
    lines += [""] + _table(["workload", *(f"agent/{other}" for other in VARIANTS[1:])], ratios, markdown) + [""]
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
