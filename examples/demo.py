"""`make demo`: the examples through an agent on loopback, then the real setting: the same through a gateway.

First an agent and a simulated instrument: the seed's example and `*IDN?` straight to the agent.
Then a gateway, and an agent with no port of its own that links out to it, as a PC behind NAT
does: the seed's example again, reaching the agent through the gateway by its id. Each step prints
the command that does it by hand. Everything runs on this machine, on loopback, and stops at the end.
"""

import os
import subprocess
import sys
from pathlib import Path

from lab.process import AgentProcess, ChildProcess, Relay
from protocol import TOKEN_VARIABLE, URL_VARIABLE

EXAMPLES = Path(__file__).resolve().parent


def run(script: str, *args: str, url: str, token: str) -> int:
    env = {**os.environ, URL_VARIABLE: url, TOKEN_VARIABLE: token, "SEED_PORT": "0"}
    print(f"$ {URL_VARIABLE}={url} {TOKEN_VARIABLE}=... python examples/{script} {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], env=env, check=False).returncode


def main() -> int:
    instrument = ChildProcess(
        [sys.executable, "-m", "lab.instrument", "--tcp", "0", "--udp", "0"],
        r"instrument tcp listening on 127\.0\.0\.1:(\d+)",
    )
    with AgentProcess() as agent, instrument:
        tcp = instrument.match.group(1)
        print(f"started an agent at {agent.url} and a simulated instrument on TCP port {tcp}", flush=True)
        code = run("seed_example.py", url=agent.url, token=agent.token)
        code = code or run("instrument_idn.py", "127.0.0.1", tcp, url=agent.url, token=agent.token)
    if code == 0:
        with Relay() as relay:
            agent_id = Relay.AGENT_ID
            print(
                "\nthe real setting: the PC dials out to a gateway, the notebook reaches it there by id\n"
                f"$ engee-gateway --port 0 --config {relay.config}\n"
                f"$ engee-agent --no-listen --gateway {relay.gateway.url} --agent-id {agent_id} --agent-key ...",
                flush=True,
            )
            code = run("seed_example.py", url=relay.url, token=relay.token)
    print(f"stopped them; the demo {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
