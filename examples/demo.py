"""`make demo`: start an agent and a simulated instrument on loopback, run the examples through the agent, stop both."""

import os
import subprocess
import sys
from pathlib import Path

from lab.process import AgentProcess, ChildProcess
from protocol import TOKEN_VARIABLE, URL_VARIABLE

EXAMPLES = Path(__file__).resolve().parent


def main() -> int:
    instrument = ChildProcess(
        [sys.executable, "-m", "lab.instrument", "--tcp", "0", "--udp", "0"],
        r"instrument tcp listening on 127\.0\.0\.1:(\d+)",
    )
    with AgentProcess() as agent, instrument:
        tcp = instrument.match.group(1)
        print(f"started an agent at {agent.url} and a simulated instrument on TCP port {tcp}", flush=True)
        env = {**os.environ, URL_VARIABLE: agent.url, TOKEN_VARIABLE: agent.token, "SEED_PORT": "0"}
        code = 0
        for script, *args in (("seed_example.py",), ("instrument_idn.py", "127.0.0.1", tcp)):
            code = (
                code or subprocess.run([sys.executable, str(EXAMPLES / script), *args], env=env, check=False).returncode
            )
    print(f"stopped them; the demo {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
