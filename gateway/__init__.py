"""The gateway: the server side of the relay. Agents link out to it; notebooks reach them through it by id.

It authenticates both sides (agent keys, user tokens, which user may use which agent), holds each
agent's link, and carries a notebook's requests and channels over it. It never opens a socket on a
user's behalf: only agents do. It imports `protocol` only.
"""
