"""A real notebook in a real Jupyter kernel: examples/tour.ipynb, run with nbclient and ipykernel against a
real agent and the simulated instrument; and a cell the user interrupts, after which the next call works
and nothing is lost."""

import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from lab.process import AgentProcess, ChildProcess

TOUR = Path(__file__).parent.parent / "examples" / "tour.ipynb"


@pytest.fixture
def kernel_env(agent_process: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the kernel needs in its environment: the agent, and the instrument's ports."""
    with ChildProcess(
        [sys.executable, "-m", "lab.instrument", "--tcp", "0", "--udp", "0"],
        r"instrument udp listening on 127\.0\.0\.1:(\d+)",
    ) as instrument:
        tcp = re.search(r"instrument tcp listening on 127\.0\.0\.1:(\d+)", instrument.output())
        assert tcp is not None
        for name, value in {
            "ENGEE_AGENT_URL": agent_process.url,
            "ENGEE_AGENT_TOKEN": agent_process.token,
            "INSTRUMENT_TCP_PORT": tcp.group(1),
            "INSTRUMENT_UDP_PORT": instrument.match.group(1),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }.items():
            monkeypatch.setenv(name, value)
        yield


def _outputs(cell: nbformat.NotebookNode) -> str:
    """A cell's text outputs, and the kinds of its rich ones."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts += [str(value) for value in output.get("data", {}).values()]
        parts += list(output.get("data", {}))
    return "\n".join(parts)


def test_the_tour_notebook_runs_every_cell(kernel_env: None) -> None:
    notebook = nbformat.read(TOUR, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(TOUR.parent)}}
    ).execute()
    shown = "\n".join(_outputs(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert "1000 messages sent and received" in shown
    assert "ENGEE,SIM-1,0001,1.0" in shown
    assert "image/png" in shown  # the telemetry plot, drawn inline
    assert "ConnectionRefusedError" in shown and "connect on descriptor" in shown
    assert "<strong>Agent</strong>" in shown and "round trip" in shown  # the agent's rich display
    assert "&lt;ResultUIntList 12 bytes from 127.0.0.1:" in shown  # the seed's last message, previewed


def test_an_interrupted_cell_leaves_the_client_working_and_loses_nothing(kernel_env: None) -> None:
    cells = [
        new_code_cell(
            "from engee_client import Sockets\n"
            "listener = Sockets.Socket('AF_INET', 'SOCK_DGRAM')\n"
            "listener.bind('127.0.0.1', 0)\n"
            "sender = Sockets.Socket('AF_INET', 'SOCK_DGRAM')\n"
            "sender.connect(*listener.local_address)"
        ),
        new_code_cell(
            "listener.receive(100)  # waits until the user presses stop", metadata={"tags": ["raises-exception"]}
        ),
        new_code_cell(
            "sender.send(b'after the interrupt')\n"
            "print(bytes(listener.receive(100, timeout=10)))\n"
            "print(listener.receive(100, timeout=0.5))"
        ),
    ]
    notebook = new_notebook(cells=cells)
    client = NotebookClient(notebook, timeout=60, kernel_name="python3")
    with client.setup_kernel():
        client.execute_cell(cells[0], 0)
        kernel = client.km.provisioner.process.pid  # the stop button: a SIGINT to the kernel, as Jupyter sends it
        stop = threading.Timer(2.0, os.kill, (kernel, signal.SIGINT))
        stop.start()
        client.execute_cell(cells[1], 1)
        stop.join()
        assert "KeyboardInterrupt" in str(cells[1].outputs)
        client.execute_cell(cells[2], 2)
    assert _outputs(cells[2]).split() == ["b'after", "the", "interrupt'", "None"]
