"""The method table: each Sockets method once. The agent routes and the client calls from it."""

from dataclasses import dataclass

from . import models as m
from .payload import has_payload
from .version import PREFIX


@dataclass(frozen=True)
class Method:
    name: str
    request: type[m.Request]
    response: type[m.Response]
    doc: str

    @property
    def path(self) -> str:
        return f"{PREFIX}/{self.name}"

    @property
    def blocking(self) -> bool:
        """Blocking methods wait at most `wait` seconds and may answer `pending`."""
        return "wait" in self.request.model_fields

    @property
    def raw_request(self) -> bool:
        return has_payload(self.request)

    @property
    def raw_response(self) -> bool:
        return has_payload(self.response)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("socket", m.SocketRequest, m.SocketInfo, "Create a socket; returns its descriptor."),
        Method("describe", m.DescriptorRequest, m.SocketInfo, "Family, type and addresses of an open socket."),
        Method("bind", m.BindRequest, m.SocketInfo, "Bind to a local address; port 0 picks a free port."),
        Method("listen", m.ListenRequest, m.SocketInfo, "Listen for incoming TCP connections."),
        Method("accept", m.AcceptRequest, m.AcceptResponse, "Wait for a TCP client; returns the new descriptor."),
        Method("connect", m.ConnectRequest, m.ConnectResponse, "Connect to a peer (TCP) or set the peer (UDP)."),
        Method("send", m.SendRequest, m.SendResponse, "Send bytes: all of them on TCP, one datagram on UDP."),
        Method("receive", m.ReceiveRequest, m.ReceiveResponse, "Receive up to bufsize bytes, or one datagram."),
        Method("is_open", m.IsOpenRequest, m.IsOpenResponse, "Whether a descriptor is open."),
        Method("close", m.DescriptorRequest, m.CloseResponse, "Close a socket; closing twice is not an error."),
        Method("sockets", m.ListRequest, m.SocketList, "The caller's open sockets; an admin may ask for everyone's."),
    )
}

AGENT_PATH = f"{PREFIX}/agent"
HEALTH_PATH = "/healthz"
