"""A lab to try the agent against: echo peers, a simulated instrument, and a launcher for child processes.

Not part of the agent or the client: the tests, the bench and the demo use it, and `engee-echo` and
`engee-instrument` run its peers for a user trying sockets without hardware.
"""
