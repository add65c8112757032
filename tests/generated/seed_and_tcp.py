"""The seed's loop and a TCP exchange through a client that openapi-python-client generated from the agent's
document, and nothing else of this repository. Argument: a JSON object with url, token and tcp (a port)."""

import base64
import io
import json
import sys

from engee_sockets_agent_client import AuthenticatedClient
from engee_sockets_agent_client.api.default import bind, close, connect, receive, receive_raw, send, send_raw
from engee_sockets_agent_client.api.default import socket as new_socket
from engee_sockets_agent_client.models import (
    BindRequest,
    ConnectRequest,
    DescriptorRequest,
    ReceiveRequest,
    SendRequest,
    SocketInfo,
    SocketRequest,
    SocketRequestFamily,
    SocketRequestSocketType,
)
from engee_sockets_agent_client.types import File

args = json.loads(sys.argv[1])
client = AuthenticatedClient(base_url=args["url"], token=args["token"])


def open_socket(kind: SocketRequestSocketType) -> SocketInfo:
    info = new_socket.sync(client=client, body=SocketRequest(family=SocketRequestFamily.AF_INET, socket_type=kind))
    assert isinstance(info, SocketInfo), info
    return info


socket_1 = open_socket(SocketRequestSocketType.SOCK_DGRAM)
socket_2 = open_socket(SocketRequestSocketType.SOCK_DGRAM)
bound = bind.sync(client=client, body=BindRequest(descriptor=socket_1.descriptor, host="127.0.0.1", port=0))
assert isinstance(bound, SocketInfo), bound
port = bound.local.port
assert connect.sync(client=client, body=ConnectRequest(descriptor=socket_2.descriptor, host="127.0.0.1", port=port))
seed = 0
for i in range(1, 1001):
    message = f"Message {i}".encode()
    sent = send.sync(client=client, body=SendRequest(descriptor=socket_2.descriptor, data=list(message)))
    got = receive.sync(client=client, body=ReceiveRequest(descriptor=socket_1.descriptor, bufsize=1000))
    seed += sent.sent == len(message) and base64.b64decode(got.data) == message
for info in (socket_1, socket_2):
    close.sync(client=client, body=DescriptorRequest(descriptor=info.descriptor))

# TCP to the test's peer, which echoes: the bytes as raw bodies, the other fields in X-Engee-Meta.
tcp = open_socket(SocketRequestSocketType.SOCK_STREAM)
assert connect.sync(client=client, body=ConnectRequest(descriptor=tcp.descriptor, host="127.0.0.1", port=args["tcp"]))
payload = bytes(range(256)) * 64
meta = json.dumps({"descriptor": tcp.descriptor})
sent = send_raw.sync(client=client, body=File(payload=io.BytesIO(payload)), x_engee_meta=meta)
echoed = b""
while len(echoed) < len(payload):
    answer = receive_raw.sync_detailed(
        client=client, body=ReceiveRequest(descriptor=tcp.descriptor, bufsize=len(payload) - len(echoed))
    )
    assert answer.status_code == 200, answer.content
    echoed += answer.content
close.sync(client=client, body=DescriptorRequest(descriptor=tcp.descriptor))
print(json.dumps({"seed": seed, "sent": sent.sent, "tcp": echoed == payload}))
