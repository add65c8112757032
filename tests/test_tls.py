"""HTTPS: the agent with --ssl-certfile/--ssl-keyfile, and clients that do and do not trust its certificate.

The certificates come from the `openssl` command line, with the same commands docs/tls.md gives:
a throwaway CA, and a server certificate for 127.0.0.1 and localhost signed by it.
"""

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from websockets.exceptions import InvalidHandshake

from engee_client import Agent, AgentError, AgentUnreachableError, AuthenticationError, DefaultAgent
from lab.process import AgentProcess, GatewayProcess

from .conftest import Background

OPENSSL = shutil.which("openssl")
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


class TlsFiles(NamedTuple):
    ca: Path
    """The CA certificate the notebook trusts (ca.pem)."""
    cert: Path
    key: Path
    other_ca: Path
    """An unrelated CA, which must not make the agent's certificate trusted."""


def openssl(directory: Path, *args: str) -> None:
    done = subprocess.run([OPENSSL, *args], cwd=directory, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


def make_ca(directory: Path, name: str) -> None:
    """`name`.pem and `name`.key: a self-signed CA that can sign server certificates."""
    openssl(
        directory,
        "req",
        "-x509",
        *EC_KEY,
        "-days",
        "3650",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-subj",
        f"/CN=engee-agent test {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def make_server_cert(directory: Path, common_name: str, alt_names: str) -> None:
    """server.pem and server.key for `alt_names` (e.g. "IP:127.0.0.1, DNS:localhost"), signed by ca.pem."""
    (directory / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {alt_names}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    openssl(
        directory, "req", "-new", *EC_KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={common_name}"
    )
    openssl(
        directory,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "825",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if OPENSSL is None:
        pytest.skip("the openssl command line is not installed")
    directory = tmp_path_factory.mktemp("tls")
    make_ca(directory, "ca")
    make_server_cert(directory, "127.0.0.1", "IP:127.0.0.1, DNS:localhost")
    make_ca(directory, "other_ca")
    # The chain must hold even under X509 strict checking, which Python 3.13's default context turns on.
    openssl(directory, "verify", "-x509_strict", "-CAfile", "ca.pem", "server.pem")
    return TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "other_ca.pem"
    )


@pytest.fixture(scope="module")
def tls_agent(tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(
        "--ssl-certfile",
        str(tls_files.cert),
        "--ssl-keyfile",
        str(tls_files.key),
        log_dir=str(tmp_path_factory.mktemp("tls-agent")),
    ) as process:
        yield process
        assert process.alive(), f"the TLS agent died:\n{process.output()}"


@pytest.fixture
def no_env_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA from the environment: $ENGEE_AGENT_CA, nor $SSL_CERT_FILE/$SSL_CERT_DIR (read by httpx's verify=True)."""
    for name in ("ENGEE_AGENT_CA", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_banner_url_is_https(tls_agent: AgentProcess) -> None:
    assert tls_agent.url.startswith("https://127.0.0.1:")
    assert f"export ENGEE_AGENT_URL={tls_agent.url}" in tls_agent.output()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_udp_round_trip_with_the_ca_file(tls_agent: AgentProcess, tls_files: TlsFiles, host: str) -> None:
    url = tls_agent.url.replace("127.0.0.1", host)
    payload = bytes(range(256)) * 4 + b"\x00end\xff"
    with Agent(url, token=tls_agent.token, verify=str(tls_files.ca)) as agent:
        assert agent.info().protocol_version == 1
        server = agent.Socket("AF_INET", "SOCK_DGRAM")
        client = agent.Socket("AF_INET", "SOCK_DGRAM")
        server.bind("127.0.0.1", 0)
        client.connect(*server.local_address)
        assert client.send(payload) == len(payload)
        received = server.receive(65535, timeout=30)
        assert received is not None and bytes(received) == payload
        assert received.address == client.local_address
        client.close()
        server.close()
        assert not server.is_open(server.descriptor)  # asks the agent, not the local flag


@pytest.mark.parametrize("verify", [True, None], ids=["verify=True", "default"])
def test_default_verification_refuses_the_private_ca(
    tls_agent: AgentProcess, no_env_trust: None, verify: bool | None
) -> None:
    arguments = {} if verify is None else {"verify": verify}
    with pytest.raises(AgentUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        Agent(tls_agent.url, token=tls_agent.token, **arguments).Socket()


def test_an_unrelated_ca_file_is_refused(tls_agent: AgentProcess, tls_files: TlsFiles) -> None:
    """verify=<file> must verify against that file, not switch verification off."""
    with pytest.raises(AgentUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        Agent(tls_agent.url, token=tls_agent.token, verify=str(tls_files.other_ca)).Socket()


def test_plain_http_to_the_tls_port_fails_at_once(tls_agent: AgentProcess) -> None:
    """The agent drops a plaintext request (reset, or closed without an answer): an error, never a hang.

    To the client that looks like a cut connection, which it retries for `retry_for` seconds.
    """
    plain = Agent(tls_agent.url.replace("https://", "http://"), token=tls_agent.token, retry_for=1.0)

    def attempt() -> BaseException | None:
        try:
            plain.Socket()
        except Exception as exc:  # inspected below
            return exc
        return None

    # Well under the client's own 60-second read timeout, so a silent server would show here as a hang.
    error = Background(attempt).join_result(timeout=30)
    plain.disconnect()
    assert isinstance(error, AgentUnreachableError), repr(error)
    assert "cannot reach the agent" in str(error)
    # A transport failure of HTTP or of the channel's upgrade, and not a timeout: the agent said no at once.
    assert isinstance(error.__cause__, httpx.TransportError | InvalidHandshake | OSError), repr(error.__cause__)
    assert not isinstance(error.__cause__, httpx.TimeoutException | TimeoutError), repr(error.__cause__)
    assert tls_agent.alive()


def test_https_to_a_plain_agent_fails(agent_process: AgentProcess, tls_files: TlsFiles) -> None:
    """The opposite mistake: https:// to an agent started without a certificate."""
    with pytest.raises(AgentUnreachableError, match="cannot reach the agent: .*SSL"):
        Agent(
            agent_process.url.replace("http://", "https://"), token=agent_process.token, verify=str(tls_files.ca)
        ).Socket()


def test_wrong_token_over_tls(tls_agent: AgentProcess, tls_files: TlsFiles) -> None:
    with pytest.raises(AuthenticationError, match="wrong token"):
        Agent(tls_agent.url, token="not-the-token", verify=str(tls_files.ca)).Socket()


def test_env_configured_sockets_refuse_the_private_ca(
    tls_agent: AgentProcess, no_env_trust: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGEE_AGENT_URL", tls_agent.url)
    monkeypatch.setenv("ENGEE_AGENT_TOKEN", tls_agent.token)
    with pytest.raises(AgentUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        DefaultAgent().Socket("AF_INET", "SOCK_DGRAM")


def test_env_configured_sockets_with_engee_agent_ca(
    tls_agent: AgentProcess, tls_files: TlsFiles, no_env_trust: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Sockets` needs three variables for an https agent with a private CA: URL, token and CA file."""
    monkeypatch.setenv("ENGEE_AGENT_URL", tls_agent.url)
    monkeypatch.setenv("ENGEE_AGENT_TOKEN", tls_agent.token)
    monkeypatch.setenv("ENGEE_AGENT_CA", str(tls_files.ca))
    sockets = DefaultAgent()
    with sockets.Socket("AF_INET", "SOCK_DGRAM") as sock:
        assert sock.is_open()
    sockets.disconnect()


def test_engee_agent_ca_is_what_gets_verified_and_verify_overrides_it(
    tls_agent: AgentProcess, tls_files: TlsFiles, no_env_trust: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGEE_AGENT_CA", str(tls_files.other_ca))
    with pytest.raises(AgentUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        Agent(tls_agent.url, token=tls_agent.token).Socket()
    with (
        Agent(tls_agent.url, token=tls_agent.token, verify=str(tls_files.ca)) as agent,
        agent.Socket("AF_INET", "SOCK_DGRAM") as sock,
    ):
        assert sock.is_open()


def test_an_agent_links_to_a_tls_gateway_with_its_ca_and_not_without(
    tls_files: TlsFiles, tmp_path: Path, transport: str, no_env_trust: None
) -> None:
    """A gateway with a certificate of a private CA: an agent given --gateway-ca links, a notebook checking the same
    CA reaches it through the gateway; an agent without the CA file does not link (nothing is sent to an impostor)."""
    key, token = "tls-lab-key-0123456789", "tls-user-token-0123456789"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[agents.tls-lab]\nkey = "{key}"\n[agents.untrusting]\nkey = "{key}"\n'
        f'[users.alice]\ntoken = "{token}"\nagents = ["tls-lab", "untrusting"]\n'
    )
    tls = ("--ssl-certfile", str(tls_files.cert), "--ssl-keyfile", str(tls_files.key))
    with GatewayProcess(str(config), *tls, log_dir=str(tmp_path)) as gateway:
        assert gateway.url.startswith("https://")
        link = ("--gateway", gateway.url, f"--agent-key={key}", "--no-listen")
        trusting = AgentProcess(
            *link, "--agent-id", "tls-lab", "--gateway-ca", str(tls_files.ca), log_dir=str(tmp_path)
        )
        untrusting = AgentProcess(*link, "--agent-id", "untrusting", log_dir=str(tmp_path))
        with trusting, untrusting:
            url = f"{gateway.url}/agents/tls-lab"
            with Agent(url, token=token, verify=str(tls_files.ca), transport=transport, retry_for=20) as lab:
                deadline = time.monotonic() + 20
                while not _linked(lab) and time.monotonic() < deadline:
                    time.sleep(0.1)
                device = lab.Socket("AF_INET", "SOCK_DGRAM")
                device.bind("127.0.0.1", 0)
                device.send_to(b"over TLS twice", *device.local_address)
                assert bytes(device.receive(100, timeout=5)) == b"over TLS twice"
            time.sleep(1.0)  # the untrusting agent has tried by now
            reply = httpx.get(
                f"{gateway.url}/agents/untrusting/v1/agent",
                headers={"Authorization": f"Bearer {token}"},
                verify=ssl.create_default_context(cafile=tls_files.ca),
            )
            assert reply.status_code == 503 and reply.json()["error"]["code"] == "agent_offline"
            assert "CERTIFICATE_VERIFY_FAILED" in untrusting.output()


def _linked(lab: Agent) -> bool:
    try:
        lab.info()
    except AgentError:
        return False
    return True
