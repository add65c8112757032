"""Benchmarks: the agent side by side with direct sockets and RPyC, in one run (`python -m bench`)."""
