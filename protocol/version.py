"""Protocol identity: the version, the URL prefix and the header names both sides use."""

PROTOCOL_VERSION = 1
PREFIX = f"/v{PROTOCOL_VERSION}"

BOOT_HEADER = "X-Engee-Boot"
"""Carried by every agent response; sent back by the client so a restarted agent refuses old descriptors."""

META_HEADER = "X-Engee-Meta"
"""JSON of a model's other fields when its payload travels as a raw application/octet-stream body."""

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"
