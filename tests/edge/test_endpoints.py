"""
stproxy's own C{ssl:} listen descriptions (stproxy.edge.endpoints): Twisted's syntax, none of
the options that would weaken TLS, and the flags filling in what a description leaves out.
"""

from __future__ import annotations

import re

import pytest

from stproxy.edge.certificates import ServerTLSFiles
from stproxy.edge.endpoints import SSLDescription, isSSLDescription


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ssl:8443", SSLDescription(8443)),
        ("ssl:port=8443", SSLDescription(8443)),
        ("ssl:0:interface=127.0.0.1", SSLDescription(0, interface="127.0.0.1")),
        (r"ssl:443:interface=\:\:1:backlog=10", SSLDescription(443, interface="::1", backlog=10)),
        (
            "ssl:8443:privateKey=key.pem:certKey=fullchain.pem",
            SSLDescription(8443, privateKey="key.pem", certKey="fullchain.pem"),
        ),
        (
            "ssl:8443:privateKey=k.pem:extraCertChain=chain.pem:dhParameters=dh.pem",
            SSLDescription(8443, privateKey="k.pem", extraCertChain="chain.pem", dhParameters="dh.pem"),
        ),
        (r"ssl:8443:privateKey=C\:\\certs\\k.pem", SSLDescription(8443, privateKey="C:\\certs\\k.pem")),
        ("ssl:8443:privateKey=/etc/a=b/k.pem", SSLDescription(8443, privateKey="/etc/a=b/k.pem")),
    ],
)
def test_ssl_descriptions_parse_like_twisteds(text: str, expected: SSLDescription) -> None:
    """The endpoint syntax operators know from Twisted, escapes included, gives the same listener."""
    assert isSSLDescription(text)
    assert SSLDescription.parse(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("ssl:8443:method=TLSv1_METHOD", "method= is not accepted"),
        ("ssl:8443:sslmethod=SSLv23_METHOD", "sslmethod= is not accepted"),
        ("ssl:8443:ciphers=ALL", "ciphers= is not accepted"),
        ("ssl:8443:verify=no", "unknown option verify="),
        ("ssl:8443:server.pem", "only the port may be given without a name"),
        ("ssl:interface=127.0.0.1", "needs a port number"),
        ("ssl:https", "needs a port number"),
        ("ssl:70000", "needs a port number"),
        ("ssl:8443:backlog=0", "backlog=0"),
        ("ssl:8443:port=8443", "given twice"),
        ("ssl:8443:privateKey=", "privateKey= needs a value"),
    ],
)
def test_insecure_or_unknown_ssl_options_are_refused(text: str, fragment: str) -> None:
    """Nothing in a description can weaken the TLS policy or be silently ignored."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        SSLDescription.parse(text)


def test_only_ssl_descriptions_are_stproxys_own() -> None:
    """
    Only ssl: descriptions (in any case) are parsed by stproxy; tcp:, unix: and look-alikes go
    to Twisted.
    """
    assert [isSSLDescription(d) for d in ("ssl:443", "SSL:443", "tcp:443", "unix:/ssl", "sslx:1")] == [
        True, True, False, False, False,
    ]  # fmt: skip


def test_flags_fill_in_what_the_description_leaves_out() -> None:
    """``--tls-cert``/``--tls-key``/``--tls-ca`` apply to ``ssl:`` listeners that name no files."""
    flags = dict(cert="full.pem", key="key.pem", extraChain="ca.pem", clientCA="clients.pem", minVersion="1.3")
    assert SSLDescription(443).files(**flags) == ServerTLSFiles(
        "full.pem", "key.pem", "ca.pem", "clients.pem", None, "1.3"
    )
    # The description's own files win, and privateKey= alone holds both (Twisted's meaning).
    assert SSLDescription(443, privateKey="both.pem").files(**flags) == ServerTLSFiles(
        "both.pem", "both.pem", "ca.pem", "clients.pem", None, "1.3"
    )
    assert SSLDescription(443, privateKey="k", certKey="c", extraCertChain="x").files(**flags).extraChain == "x"
    with pytest.raises(ValueError, match="certKey= needs privateKey="):
        SSLDescription(443, certKey="c").files(**flags)
    with pytest.raises(ValueError, match="no certificate"):
        SSLDescription(443).files()


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:8500", "tcp:8500:backlog=511"),
        (r"tcp6:8500:interface=\:\:1", r"tcp6:8500:interface=\:\:1:backlog=511"),
        ("unix:/run/stproxy.sock:mode=660", "unix:/run/stproxy.sock:mode=660:backlog=511"),
        ("tcp:8500:backlog=64", "tcp:8500:backlog=64"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_listeners_get_a_backlog_for_bursts_unless_they_name_one(description: str, expected: str) -> None:
    """Twisted's default listen queue of 50 makes a burst of browsers wait a second for a SYN retry: 511, as nginx, unless given."""
    from stproxy.edge.endpoints import withDefaultBacklog

    assert withDefaultBacklog(description) == expected
    assert SSLDescription.parse("ssl:8443").backlog == 511


def test_a_plain_listener_listens_with_the_default_backlog() -> None:
    """The endpoint built for --listen tcp:PORT asks the reactor for that queue."""
    from twisted.internet.testing import MemoryReactor

    from stproxy.edge.endpoints import listenerEndpoint

    reactor = MemoryReactor()
    listenerEndpoint(reactor, "tcp:8500:interface=127.0.0.1", {}).listen(object())  # type: ignore[arg-type]
    [(port, _, backlog, interface)] = reactor.tcpServers
    assert (port, backlog, interface) == (8500, 511, "127.0.0.1")
