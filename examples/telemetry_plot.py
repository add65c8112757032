"""Receive UDP telemetry through the agent into numpy and plot it to a PNG.

    ENGEE_AGENT_URL=... ENGEE_AGENT_TOKEN=... python examples/telemetry_plot.py [HOST [PORT [SAMPLES [PNG]]]]

Subscribes to `engee-instrument`'s telemetry port (default 127.0.0.1 5026 as the agent's machine
sees it), takes SAMPLES datagrams (default 400) of `<Idd` (sequence, time, value) and writes
telemetry.png. Needs the plot extra: pip install 'engee-sockets[plot]'.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # no screen needed
import matplotlib.pyplot as plt
import numpy as np

from engee_client import Sockets

SAMPLE = np.dtype([("seq", "<u4"), ("t", "<f8"), ("value", "<f8")])


def receive_samples(host: str, port: int, count: int) -> np.ndarray:
    with Sockets.Socket("AF_INET", "SOCK_DGRAM") as telemetry:
        telemetry.connect(host, port)
        telemetry.send(f"SUBSCRIBE {count}".encode())
        datagrams = []
        while len(datagrams) < count:
            datagram = telemetry.receive(SAMPLE.itemsize, timeout=10)
            if datagram is None:
                break  # UDP may drop some; plot what came
            datagrams.append(bytes(datagram))
        telemetry.send(b"STOP")
    return np.frombuffer(b"".join(datagrams), dtype=SAMPLE)


def main(host: str = "127.0.0.1", port: int = 5026, count: int = 400, png: str = "telemetry.png") -> None:
    samples = receive_samples(host, port, count)
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.plot(samples["t"], samples["value"], linewidth=1)
    axes.set(xlabel="time (s)", ylabel="value", title=f"{len(samples)} telemetry samples through the agent")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    print(
        f"{len(samples)} samples, mean {samples['value'].mean():+.3f}, "
        f"lost {int(samples['seq'].max()) + 1 - len(samples) if len(samples) else count}; plot in {png}"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*args[:1], *map(int, args[1:3]), *args[3:4])
