"""Wait until the agent at $ENGEE_AGENT_URL answers (through a gateway: until it has linked), at most 60 s."""

import sys
import time

from engee_client import AgentError, Sockets

deadline = time.monotonic() + 60
while True:
    try:
        print(f"the agent answers: {Sockets.info().agent_id}")
        break
    except AgentError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"the agent did not answer in 60 s: {exc}")
        time.sleep(0.5)
