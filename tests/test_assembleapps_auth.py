"""
Authentication as the assembly wires it (stproxy.assembleapps.appAuth, passthroughRoute, and
stproxy.assembly.assemble): no gate and no service without authentication; the steps in their
fixed order (client certificate, passwords, auth service); the pass-through prefixes routed to the
auth service's origin ahead of the apps and left unchecked, and nothing else left unchecked.
Configurations come from stproxy's own option parser, on a MemoryReactorClock.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bcrypt
import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from auth_fakes import LOOPBACK, request
from option_parsing import parse
from pki import PKI
from site_connection import parse as parseAnswers
from stproxy.assembleapps import appAuth, appRouting
from stproxy.auth.gate import BasicStep, CertificateUser, ForwardStep, Gate
from stproxy.auth.service import AuthService
from stproxy.config import Config
from stproxy.http.site import ProxySite
from stproxy.ops.metrics import Metrics
from stproxy.tap import makeService
from stproxy.upstream.address import UpstreamAddress

_case = SynchronousTestCase()
LISTEN = ("--listen", "tcp:8500:interface=127.0.0.1")
AUTH_SERVICE = "http://192.0.2.50:4180/oauth2/auth"
STREAMLIT = ("--upstream", "127.0.0.1:8501")


def log(event: dict[str, Any]) -> None:
    """Where the assembled parts log: nowhere."""


def authOf(config: Config) -> tuple[Gate | None, AuthService | None]:
    """appAuth of C{config} on a memory reactor."""
    return appAuth(config, MemoryReactorClock(), Metrics(), log)


def htpasswd(tmp_path: Path) -> str:
    """An htpasswd file for alice (cost-4 bcrypt), as --auth htpasswd: names it."""
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{bcrypt.hashpw(b'pw', bcrypt.gensalt(rounds=4)).decode()}\n")
    return f"htpasswd:{path}"


def test_no_authentication_gives_no_gate_and_no_service() -> None:
    """Without --auth, --forward-auth or --user-from-cert, appAuth gives (None, None) and assemble no "auth" child."""
    config = parse(*STREAMLIT).config
    assert authOf(config) == (None, None)
    service = makeService(parse(*STREAMLIT, *LISTEN), MemoryReactorClock())
    assert "auth" not in [child.name for child in service]


def test_every_step_is_configured_in_its_order(tmp_path: Path, pki: PKI) -> None:
    """Client certificate, then passwords, then the auth service: three steps, whatever the flag order."""
    config = parse(
        "--forward-auth", AUTH_SERVICE, "--auth", htpasswd(tmp_path), "--user-from-cert", "cn",
        "--listen", "ssl:8443", *pki.server_args(), "--tls-client-ca", pki.ca, *STREAMLIT,
    ).config  # fmt: skip
    gate, service = authOf(config)
    assert gate is not None and isinstance(service, AuthService)
    assert [type(step) for step in gate.steps] == [CertificateUser, BasicStep, ForwardStep]
    assert service.name == "auth"


@pytest.mark.parametrize(
    "flags, steps",
    [
        (("--auth", "memory:alice:pw"), [BasicStep]),
        (("--forward-auth", AUTH_SERVICE), [ForwardStep]),
    ],
)
def test_only_the_steps_configured(flags: tuple[str, ...], steps: list[type]) -> None:
    """One method configured, one step."""
    gate, service = authOf(parse(*flags, *LISTEN, *STREAMLIT).config)
    assert gate is not None and service is not None
    assert [type(step) for step in gate.steps] == steps


def test_the_auth_service_is_a_child_of_the_assembled_proxy() -> None:
    """With authentication the proxy's tree holds the "auth" service, started and stopped with it."""
    service = makeService(
        parse("--auth", "memory:alice:pw", *LISTEN, *STREAMLIT), MemoryReactorClock()
    )
    [auth] = [child for child in service if child.name == "auth"]
    assert isinstance(auth, AuthService)


def test_passthrough_routes_come_first_and_go_to_the_auth_services_origin() -> None:
    """/oauth2/x goes to the scheme, host and port of --forward-auth, ahead of the app at /."""
    config = parse(
        "--forward-auth", AUTH_SERVICE, "--forward-auth-passthrough", "/oauth2/",
        "--forward-auth-passthrough", "/sso", *STREAMLIT,
    ).config  # fmt: skip
    routes = appRouting(config, MemoryReactorClock(), Metrics(), log).routes
    assert [route.prefix for route in routes.routes] == ["/oauth2", "/sso", "/"]
    first = routes.find(b"/oauth2/callback")
    assert first is routes.routes[0]
    replica = first.replicas.choose()
    assert replica is not None
    assert replica.address == UpstreamAddress("http", "192.0.2.50", 4180)
    assert first.replicas.healthPath is None  # the auth service is not Streamlit
    assert not first.sticky
    app = routes.find(b"/page")
    assert app is routes.routes[-1]
    assert app.replicas.choose().address == UpstreamAddress("http", "127.0.0.1", 8501)


def test_an_https_auth_service_is_reached_over_https() -> None:
    """The pass-through route keeps the auth service URL's scheme and port."""
    config = parse(
        "--forward-auth", "https://auth.example:8443/oauth2/auth",
        "--forward-auth-passthrough", "/oauth2", *STREAMLIT,
    ).config  # fmt: skip
    routes = appRouting(config, MemoryReactorClock(), Metrics(), log).routes
    replica = routes.find(b"/oauth2/start").replicas.choose()
    assert replica.address == UpstreamAddress("https", "auth.example", 8443)


@pytest.mark.parametrize("path", [b"/oauth2/start", b"/oauth2", b"/oauth2/callback?code=x"])
def test_the_gate_lets_passthrough_paths_through_unchecked(path: bytes) -> None:
    """appAuth's gate allows the pass-through prefix itself and anything below it, as "passthrough"."""
    config = parse(
        "--auth", "memory:alice:pw", "--forward-auth", AUTH_SERVICE,
        "--forward-auth-passthrough", "/oauth2/", *LISTEN, *STREAMLIT,
    ).config  # fmt: skip
    gate, _ = authOf(config)
    assert gate is not None

    probe = SimpleNamespace(path=path.split(b"?")[0])
    verdict = _case.successResultOf(gate.check(probe))  # type: ignore[arg-type]
    assert verdict.allowed and verdict.method == "passthrough"


class AssembledProxy:
    """The whole proxy from a command line, on a MemoryReactorClock; requests into its site."""

    def __init__(self, *argv: str) -> None:
        self.reactor = MemoryReactorClock()
        service = makeService(parse(*argv), self.reactor)
        [self.site] = [
            child.factory
            for child in service
            if isinstance(child, StreamServerEndpointService)
            and isinstance(child.factory, ProxySite)
        ]

    def send(self, data: bytes) -> tuple[bytes, list[tuple[str, int]]]:
        """What the client got, and where the proxy connected to (the upstream it forwarded to)."""
        before = len(self.reactor.tcpClients)
        protocol = self.site.buildProtocol(LOOPBACK)
        transport = StringTransport(peerAddress=LOOPBACK)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.reactor.advance(0)
        return transport.value(), [
            (host, port) for host, port, *_ in self.reactor.tcpClients[before:]
        ]


PASSTHROUGH = (
    "--auth", "memory:alice:pw", *LISTEN, "--forward-auth", AUTH_SERVICE,
    "--forward-auth-passthrough", "/oauth2/", *STREAMLIT,
)  # fmt: skip


def test_an_assembled_proxy_routes_passthrough_to_the_auth_service_unchecked() -> None:
    """/oauth2/start, without credentials, is forwarded to the auth service, not refused."""
    proxy = AssembledProxy(*PASSTHROUGH)
    output, connected = proxy.send(request(b"GET", b"/oauth2/start?rd=/"))
    assert output == b""  # waiting for the auth service
    assert connected == [("192.0.2.50", 4180)]


def test_an_assembled_proxy_checks_everything_else() -> None:
    """/page without credentials gets Basic's 401, and nothing is connected to."""
    proxy = AssembledProxy(*PASSTHROUGH)
    output, connected = proxy.send(request(b"GET", b"/page"))
    [answer] = parseAnswers(output)
    assert answer.status == 401 and answer.header(b"www-authenticate") is not None
    assert connected == []


@pytest.mark.parametrize(
    "path", [b"/oauth2evil", b"/oauth2-admin/page", b"/oauth2x/_stcore/health"]
)
def test_a_path_that_only_starts_like_a_passthrough_prefix_is_checked(path: bytes) -> None:
    """Only the prefix itself and paths below it are pass-through: /oauth2evil is the app's, and needs credentials."""
    proxy = AssembledProxy(*PASSTHROUGH)
    output, connected = proxy.send(request(b"GET", path))
    assert connected == []
    assert parseAnswers(output)[0].status == 401


def test_an_app_whose_prefix_extends_a_passthrough_prefix_is_still_checked() -> None:
    """--forward-auth-passthrough /auth and an app at /authoring: the app's requests still need credentials."""
    proxy = AssembledProxy(
        "--auth", "memory:alice:pw", *LISTEN, "--forward-auth", AUTH_SERVICE,
        "--forward-auth-passthrough", "/auth", "--route", "/authoring=127.0.0.1:8502",
    )  # fmt: skip
    output, connected = proxy.send(request(b"GET", b"/authoring/"))
    assert connected == []
    assert parseAnswers(output)[0].status == 401


def test_a_single_upstream_is_health_checked_only_for_readyz() -> None:
    """One --upstream: no health check without --admin (nothing reads it); with --admin, /readyz needs one."""
    from stproxy.tap import Options

    def checked(*args: str) -> bool:
        options = Options(environ={})
        options.parseOptions(["--upstream", "127.0.0.1:8501", *args])
        routing = appRouting(options.config, MemoryReactorClock(), Metrics(), lambda event: None)
        [route] = routing.routes.routes
        return route.replicas.healthPath is not None

    assert not checked()
    assert checked("--admin", "tcp:0:interface=127.0.0.1")
    assert checked("--upstream", "127.0.0.1:8502")
