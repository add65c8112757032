"""The asyncio client: `AsyncAgent` and its `AsyncSocket`s, the blocking client's API as awaitables.

    from engee_client import AsyncAgent
    async with AsyncAgent("http://labpc.example:8700", token="...") as lab:
        s = await lab.Socket("AF_INET", "SOCK_DGRAM")
        await s.bind("127.0.0.1", 8888)              # or: await lab.bind(s, "127.0.0.1", 8888)
        result = await s.receive(1000)               # None, or a ResultUIntList

The same methods, arguments, results, exceptions and messages as `Agent` and `Socket`: both run the
same flows (engee_client.core); only the transport awaits. Calls on many sockets run concurrently
(`asyncio.gather`), each on a connection of its own, so a receive waiting on one socket never
delays another.

Cancelling a blocking call (`asyncio.wait_for`, `task.cancel()`) is what KeyboardInterrupt is to the
blocking client: the agent's wait goes on, whatever it takes is kept, and the next call of that
method on that socket gets it. Nothing the agent took from the OS is lost.
"""

from .agent import AsyncAgent
from .http import AsyncHttpTransport
from .socket import AsyncSocket

__all__ = ["AsyncAgent", "AsyncHttpTransport", "AsyncSocket"]
