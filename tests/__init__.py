"""Tests against a real agent process and real sockets on loopback."""
