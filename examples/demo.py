"""`make demo`: start an agent on loopback, run the seed's example through it, stop the agent."""

import os
import subprocess
import sys
from pathlib import Path

from agent.process import AgentProcess

SEED_EXAMPLE = Path(__file__).with_name("seed_example.py")


def main() -> int:
    with AgentProcess() as agent:
        print(f"started an agent at {agent.url} (pid {agent.pid})", flush=True)
        env = {**os.environ, "ENGEE_AGENT_URL": agent.url, "ENGEE_AGENT_TOKEN": agent.token, "SEED_PORT": "0"}
        code = subprocess.run([sys.executable, str(SEED_EXAMPLE)], env=env).returncode
    print(f"stopped the agent; the seed example {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
