"""The seed's step-by-step example (two UDP sockets on one machine, 1000 messages), in Python.

Both sockets live on the agent named by $ENGEE_AGENT_URL / $ENGEE_AGENT_TOKEN; "localhost" is the
agent's machine. SEED_HOST / SEED_PORT override 127.0.0.1:8888 (port 0 lets the agent pick one).

    ENGEE_AGENT_URL=http://127.0.0.1:8700 ENGEE_AGENT_TOKEN=... python examples/seed_example.py
"""

import os

from engee_client import SOCKET


def main() -> None:
    host = os.environ.get("SEED_HOST", "127.0.0.1")
    port = int(os.environ.get("SEED_PORT", "8888"))

    # 1. Creation of the first socket (server)
    socket_1 = SOCKET.Socket("AF_INET", "SOCK_DGRAM")
    # 2. Bind the first socket to the address and port
    socket_1.bind(host, port)
    if port == 0:
        host, port = socket_1.local_address  # the port the agent picked
    # 3. Creating a second socket (client)
    socket_2 = SOCKET.Socket("AF_INET", "SOCK_DGRAM")
    try:
        # 4. Connecting the second socket to the server
        socket_2.connect(host, port)

        # 5. Message sending and verification cycle
        num_messages = 1000
        checked = 0
        for i in range(1, num_messages + 1):
            # Forming a text message
            message = f"Message {i}"
            # Convert the message to an array of bytes
            byte_array = list(message.encode())
            # Sending an array of bytes via socket 2
            socket_2.send(byte_array)

            # We accept data (maximum 1000 bytes) on socket 1
            res_for_recv = socket_1.receive(1000).data
            # We check that the received data matches the sent data.
            assert res_for_recv == byte_array
            checked += 1
    finally:
        # 6. Closing sockets and freeing resources
        socket_1.close()
        socket_2.close()

    print(f"seed example: {checked} of {num_messages} UDP messages checked through the agent at {SOCKET.url}")


if __name__ == "__main__":
    main()
