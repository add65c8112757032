"""How an address is written for people: `host:port`, with brackets around an IPv6 host."""


def host_port(host: str, port: int | str) -> str:
    """`10.0.0.5:502`, `[::1]:8700`; a host already in brackets keeps its one pair."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def bracketed(host: str) -> str:
    """The host as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
