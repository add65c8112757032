"""The status page at `/`: who is connected and a live table of open sockets, for the user's browser.

The token arrives once in the link the agent prints (`/?token=...`) and is swapped for an HttpOnly,
SameSite=Strict cookie; the gate accepts that cookie for GET requests only, so the page can look but
never drive a socket.
"""

import html
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from protocol import PREFIX
from protocol.models import Address

from .clients import ClientRow, Clients
from .descriptors import DescriptorTable, Entry
from .gate import COOKIE, PRINCIPAL
from .settings import Principal

STATUS_PATH = f"{PREFIX}/status"


class SocketRow(BaseModel):
    descriptor: int
    socket_type: str
    local: str
    peer: str
    owner: str
    bytes_in: int
    bytes_out: int
    dropped: int = 0
    """Datagrams a full stream window dropped."""
    idle: float


class Status(BaseModel):
    agent_id: str
    version: str
    uptime: float
    principal: str
    link: str | None = None
    """The link to a gateway: linked to URL, linking, or linking again in some seconds; None without one."""
    clients: list[ClientRow]
    sockets: list[SocketRow]


def add_status_routes(
    app: FastAPI,
    table: DescriptorTable,
    clients: Clients,
    agent_id: str,
    version: str,
    link: Callable[[], str | None] = lambda: None,
) -> None:
    started = time.monotonic()

    def status(principal: Principal) -> Status:
        entries = table.entries(None if principal.admin else principal.name)
        return Status(
            agent_id=agent_id,
            version=version,
            uptime=round(time.monotonic() - started, 1),
            principal=principal.name,
            link=link(),
            clients=clients.rows(principal),
            sockets=[_row(e) for e in entries],
        )

    @app.get(
        STATUS_PATH,
        response_model=Status,
        summary="Clients and open sockets, for the status page.",
        openapi_extra={"security": [{"bearer": []}]},
    )
    async def status_data(request: Request) -> Status:
        return status(request.scope[PRINCIPAL])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request, token: str | None = None) -> Response:
        if token is not None:  # the printed link: keep the token in a cookie, out of the address bar
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
            return response
        return HTMLResponse(_page(status(request.scope[PRINCIPAL])))


def _row(entry: Entry) -> SocketRow:
    info = entry.info()
    return SocketRow(
        descriptor=entry.descriptor,
        socket_type=entry.socket_type,
        local=_show(info.local),
        peer=_show(info.peer),
        owner=entry.owner,
        bytes_in=entry.bytes_in,
        bytes_out=entry.bytes_out,
        dropped=entry.dropped,
        idle=round(time.monotonic() - entry.last_call, 1),
    )


def _show(address: Address | None) -> str:
    return "" if address is None else str(address)


_COLUMNS = ("descriptor", "socket_type", "local", "peer", "owner", "bytes_in", "bytes_out", "dropped", "idle")


def _page(status: Status) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(getattr(row, c)))}</td>" for c in _COLUMNS) + "</tr>"
        for row in status.sockets
    )
    heads = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in _COLUMNS)
    return _TEMPLATE.format(
        agent=html.escape(status.agent_id),
        version=html.escape(status.version),
        principal=html.escape(status.principal),
        link=f"<span>gateway link: <b>{html.escape(status.link)}</b></span>" if status.link else "",
        uptime=status.uptime,
        clients=len(status.clients),
        heads=heads,
        rows=rows,
        path=STATUS_PATH,
        columns=list(_COLUMNS),
    )


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>engee-agent</title>
<style>
 body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
 table {{ border-collapse: collapse; }} th, td {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }}
 th {{ background: #f3f3f3; }} .facts span {{ margin-right: 2em; }}
</style></head>
<body>
<h1>engee-agent</h1>
<p class="facts"><span>agent <b>{agent}</b></span><span>version {version}</span><span>you are <b>{principal}</b></span>
<span>up <b id="uptime">{uptime}</b> s</span><span><b id="clients">{clients}</b> connected clients</span>{link}</p>
<h2>Open sockets</h2>
<table><thead><tr>{heads}</tr></thead><tbody id="sockets">{rows}</tbody></table>
<script>
const columns = {columns};
async function refresh() {{
  const reply = await fetch("{path}", {{credentials: "same-origin"}});
  if (!reply.ok) return;
  const status = await reply.json();
  document.getElementById("uptime").textContent = status.uptime;
  document.getElementById("clients").textContent = status.clients.length;
  const body = document.getElementById("sockets");
  body.dataset.refreshed = Number(body.dataset.refreshed || 0) + 1;
  body.replaceChildren(...status.sockets.map(row => {{
    const tr = document.createElement("tr");
    for (const column of columns) {{ const td = document.createElement("td"); td.textContent = row[column]; tr.append(td); }}
    return tr;
  }}));
}}
setInterval(refresh, 1000);
</script>
</body></html>
"""
