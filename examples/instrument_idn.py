"""Ask a line-based instrument who it is: `query("*IDN?")` over TCP through the agent, one round trip.

    ENGEE_AGENT_URL=... ENGEE_AGENT_TOKEN=... python examples/instrument_idn.py [HOST [PORT]]

HOST and PORT are the instrument's, as the agent's machine sees it (default 127.0.0.1 5025, where
`engee-instrument` listens).
"""

import sys

from engee_client import Sockets


def main(host: str = "127.0.0.1", port: int = 5025) -> None:
    with Sockets.Socket("AF_INET", "SOCK_STREAM") as instrument:
        instrument.connect(host, port, timeout=10)
        for command in ("*IDN?", "MEAS?"):  # the instrument ends its answers in CR LF, as SCPI ones do
            answer = instrument.query(command, terminator="\r\n", timeout=10)
            print(f"{command} -> {answer}")


if __name__ == "__main__":
    main(*sys.argv[1:2], *map(int, sys.argv[2:3]))
