"""Protocol identity: the version, the URL prefix and the header names both sides use."""

PROTOCOL_VERSION = 1
PREFIX = f"/v{PROTOCOL_VERSION}"

BOOT_HEADER = "X-Engee-Boot"
"""Carried by every agent response; sent back by the client so a restarted agent refuses old descriptors."""

META_HEADER = "X-Engee-Meta"
"""JSON of a model's other fields when its payload travels as a raw application/octet-stream body."""

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"

CALL_HEADER = "X-Engee-Call"
"""`<session>.<seq>`, optionally followed by ` done=<seq>`: the client's id of a call, run at most once
however often it is retried, and the number up to which the client has every answer of its session."""

URL_VARIABLE = "ENGEE_AGENT_URL"
"""The environment variable naming the agent a notebook's `Sockets` talks to."""
TOKEN_VARIABLE = "ENGEE_AGENT_TOKEN"
"""The token: the agent's when it starts, the client's when it calls."""
TRANSPORT_VARIABLE = "ENGEE_AGENT_TRANSPORT"
"""How the client calls the agent: auto (the channel when the agent offers one), channel, or http."""
CA_VARIABLE = "ENGEE_AGENT_CA"
"""A CA file the client trusts for an https agent with a self-signed certificate."""
RETRY_HEADER = "Retry-After"
"""On a gateway's 503 agent_offline: the agent's link dropped with this call on it, so its outcome is unknown; the
client sends it again under the same call id (the agent's ledger runs it at most once) until its time is up. A
503 without it means the agent is simply not linked: no retry helps."""
