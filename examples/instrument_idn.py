"""Ask a line-based instrument who it is: send `*IDN?` over TCP through the agent, read the reply line.

    ENGEE_AGENT_URL=... ENGEE_AGENT_TOKEN=... python examples/instrument_idn.py [HOST [PORT]]

HOST and PORT are the instrument's, as the agent's machine sees it (default 127.0.0.1 5025, where
`engee-instrument` listens).
"""

import sys

from engee_client import Sockets


def ask(device, command: str) -> str:
    """Send one command line and read one answer line."""
    device.send(command.encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = device.receive(1024, timeout=10)
        if chunk is None:
            raise ConnectionError(f"the instrument closed the connection after {answer!r}")
        answer += bytes(chunk)
    return answer.decode().strip()


def main(host: str = "127.0.0.1", port: int = 5025) -> None:
    with Sockets.Socket("AF_INET", "SOCK_STREAM") as instrument:
        instrument.connect(host, port, timeout=10)
        print(f"*IDN? -> {ask(instrument, '*IDN?')}")
        print(f"MEAS? -> {ask(instrument, 'MEAS?')}")


if __name__ == "__main__":
    main(*sys.argv[1:2], *map(int, sys.argv[2:3]))
