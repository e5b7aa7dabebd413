"""
Authentication settings (stproxy.auth.settings): which listeners would carry Basic credentials in
clear (plain tcp: on anything but loopback), and the settings that cannot work refused at once.
"""

from __future__ import annotations

import pytest
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

from stproxy.auth.forwardauth import ForwardAuthSettings
from stproxy.auth.identity import IdentityHeaders
from stproxy.auth.settings import AuthError, AuthSettings, insecureListeners

FORWARD = ForwardAuthSettings(url="http://oauth2-proxy:4180/oauth2/auth")


@pytest.mark.parametrize(
    "description",
    [
        "tcp:8500",
        "tcp:0",
        "tcp:8500:interface=0.0.0.0",
        "tcp:8500:interface=192.0.2.10",
        "tcp:8500:interface=\\:\\:",
        "tcp6:8500",
        "tcp6:8500:interface=\\:\\:",
        "TCP:8500",
        "tcp:port=8500:interface=app.internal",
        "tcp:8500:interface=",
    ],
)
def test_plain_tcp_off_loopback_is_insecure(description: str) -> None:
    """A plain TCP listener on every interface, a public address or a name carries passwords in clear."""
    assert insecureListeners((description,)) == [description]


@pytest.mark.parametrize(
    "description",
    [
        "tcp:8500:interface=127.0.0.1",
        "tcp:8500:interface=127.0.0.53",
        "tcp:8500:interface=\\:\\:1",
        "tcp6:8500:interface=\\:\\:1",
        "tcp:8500:interface=[\\:\\:1]",
        "tcp:8500:interface=localhost",
        "tcp:interface=127.0.0.1:port=8500",
        "tcp:8500:backlog=50:interface=127.0.0.1",
        "unix:/run/stproxy.sock",
        "unix:address=/tmp/s:mode=600",
        "ssl:8443",
        "ssl:8443:interface=0.0.0.0",
    ],
)
def test_loopback_unix_and_ssl_listeners_are_not_insecure(description: str) -> None:
    """Loopback (IPv4, escaped IPv6, localhost), UNIX sockets and ssl: listeners keep passwords off the wire."""
    assert insecureListeners((description,)) == []


def test_insecure_listeners_are_listed_in_order() -> None:
    """Of several listeners, exactly the insecure ones are given, in the order configured."""
    listen = (
        "ssl:8443",
        "tcp:8500",
        "tcp:8501:interface=127.0.0.1",
        "tcp6:8502:interface=\\:\\:",
        "unix:/s",
    )
    assert insecureListeners(listen) == ["tcp:8500", "tcp6:8502:interface=\\:\\:"]
    assert insecureListeners(()) == []


def test_defaults_check_nothing() -> None:
    """With nothing configured, authentication is off and the identity headers have their default names."""
    settings = AuthSettings()
    assert not settings.enabled
    assert settings.maxFailures == 10
    assert settings.identity == IdentityHeaders()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"checkers": (InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw"),)},
        {"forward": FORWARD},
        {"userFromCert": True},
    ],
    ids=["checkers", "forward", "userFromCert"],
)
def test_any_step_enables_authentication(kwargs: dict[str, object]) -> None:
    """A password checker, an auth service or the certificate's CN each turn authentication on."""
    assert AuthSettings(**kwargs).enabled  # type: ignore[arg-type]


@pytest.mark.parametrize("maxFailures", [0, -1])
def test_max_failures_below_one_is_refused(maxFailures: int) -> None:
    """--auth-max-failures 0 would throttle every client: refused with the flag's name."""
    with pytest.raises(AuthError, match="--auth-max-failures"):
        AuthSettings(maxFailures=maxFailures)
    assert AuthSettings(maxFailures=1).maxFailures == 1


def test_passthrough_without_forward_auth_is_refused() -> None:
    """A pass-through prefix routes to the auth service, so it needs one."""
    with pytest.raises(AuthError, match="--forward-auth-passthrough needs --forward-auth"):
        AuthSettings(passthrough=("/oauth2",))
    assert AuthSettings(passthrough=("/oauth2",), forward=FORWARD).passthrough == ("/oauth2",)


def test_auth_error_is_a_value_error() -> None:
    """Callers that catch ValueError (the flag parsers) catch it too."""
    assert issubclass(AuthError, ValueError)
