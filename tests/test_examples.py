"""The examples, run as a user runs them: against the simulated instrument, through a real agent."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.process import AgentProcess, ChildProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def instrument(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    process = ChildProcess(
        [sys.executable, "-m", "lab.instrument", "--tcp", "0", "--udp", "0"],
        r"instrument tcp listening on 127\.0\.0\.1:(\d+)\s+instrument udp listening on 127\.0\.0\.1:(\d+)",
        log_dir=str(tmp_path_factory.mktemp("instrument")),
    )
    tcp, udp = process.start().match.groups()
    yield {"tcp": int(tcp), "udp": int(udp)}
    assert process.stop() == 0


def run(script: str, agent_process: AgentProcess, *args: object, cwd: Path | None = None) -> str:
    env = {**os.environ, "ENGEE_AGENT_URL": agent_process.url, "ENGEE_AGENT_TOKEN": agent_process.token}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_idn_over_a_line_based_tcp_port(instrument: dict[str, int], agent_process: AgentProcess) -> None:
    output = run("instrument_idn.py", agent_process, "127.0.0.1", instrument["tcp"])
    assert "*IDN? -> ENGEE,SIM-1,0001,1.0" in output
    assert float(output.split("MEAS? -> ")[1])  # a number came back


def test_udp_telemetry_into_numpy_and_a_png(
    instrument: dict[str, int], agent_process: AgentProcess, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    output = run("telemetry_plot.py", agent_process, "127.0.0.1", instrument["udp"], 300, "plot.png", cwd=tmp_path)
    assert output.startswith("300 samples") and "lost 0" in output
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
