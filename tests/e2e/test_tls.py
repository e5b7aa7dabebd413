"""
The TLS edge (issue 5): ``ssl:`` listeners with stproxy's own policy, client certificates, the
HTTP→HTTPS redirect and HSTS, an upstream over TLS, certificate reload, and start-up errors.

Certificates are made per test run with ``cryptography`` (``tests/certs.py``) in a temporary
directory: a root CA, an intermediate that signs the server certificate (so a proxy that sent
only the leaf of ``fullchain.pem`` would fail verification), and client certificates.

The first half needs no sockets: description parsing, file checks, the context's options, and
handshakes between OpenSSL objects in memory. The second half runs a real ``twistd -n stproxy``
in front of a real Streamlit or the stdlib test upstream, and talks to it with ``curl``,
``openssl s_client`` and a small stdlib ``wss://`` client.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python import usage
from zope.interface import implementer
from twisted.internet.interfaces import ISSLTransport

from certs import CertificateAuthority, Issued
from harness import HERE, ProcessOutput, ProxyProcess, StreamlitProcess, run_proxy, start_proxy, wait_until
from stproxy.edge.certificates import (
    CertificateError,
    ServerCertificate,
    ServerTLSFiles,
    loadServerCertificate,
)
from stproxy.edge.endpoints import SSLDescription, isSSLDescription
from stproxy.edge.redirect import httpsLocation
from stproxy.tap import Options
from stproxy.edge.clientcert import clientCertificateSubject
from stproxy.edge.reload import TLSService

PYTHON_M_STPROXY = [sys.executable, "-m", "stproxy"]
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")


# ------------------------------------------------------------------------------- certificates


class PKI:
    """A root CA, an intermediate, a server certificate for localhost/127.0.0.1/app.test, two clients."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = CertificateAuthority.create(directory / "root")
        self.intermediate = self.root.intermediate()
        self.server = self.intermediate.issue(
            directory / "server", "localhost", dns=["localhost", "app.test"], ips=["127.0.0.1"]
        )
        self.client = self.root.issue(directory / "alice", "alice", client=True)
        self.other_ca = CertificateAuthority.create(directory / "other-root", "someone else's CA")
        self.stranger = self.other_ca.issue(directory / "mallory", "mallory", client=True)

    @property
    def ca(self) -> str:
        return str(self.root.cert_path)

    def server_args(self) -> list[str]:
        return ["--tls-cert", str(self.server.cert_path), "--tls-key", str(self.server.key_path)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def files_for(issued: Issued, **kwargs) -> ServerTLSFiles:
    return ServerTLSFiles(str(issued.cert_path), str(issued.key_path), **kwargs)


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


# ------------------------------------------------------------------- 1. ssl: description parsing


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


# ------------------------------------------------------------------ 2. certificate file checks


def test_a_full_chain_file_serves_leaf_and_intermediate(pki: PKI) -> None:
    loaded = loadServerCertificate(files_for(pki.server))
    assert loaded.subject == "CN=localhost,O=stproxy tests"
    assert loaded.options.extraCertChain == [pki.intermediate.cert]


def test_key_and_certificate_may_share_one_file(pki: PKI, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(pki.server.key_path.read_bytes() + pki.server.cert_path.read_bytes())
    assert loadServerCertificate(ServerTLSFiles(str(both), str(both))).fingerprint == pki.server.fingerprint


def _bad_files(pki: PKI, tmp: Path, problem: str) -> tuple[ServerTLSFiles, str]:
    """Files with ``problem``, and the message fragment expected (which names the file)."""
    cert, key = str(pki.server.cert_path), str(pki.server.key_path)
    if problem == "missing":
        return ServerTLSFiles(str(tmp / "nope.pem"), key), f"{tmp / 'nope.pem'}: no such file"
    if problem == "directory":
        return ServerTLSFiles(cert, str(tmp)), f"{tmp}: cannot read private key"
    if problem == "not-pem":
        (tmp / "junk.pem").write_text("hello\n")
        return ServerTLSFiles(str(tmp / "junk.pem"), key), "junk.pem: no PEM certificate"
    if problem == "half-written":
        data = pki.server.cert_path.read_bytes()
        (tmp / "half.pem").write_bytes(data[: len(data) // 3])
        return ServerTLSFiles(str(tmp / "half.pem"), key), "half.pem: no PEM certificate"
    if problem == "corrupt":
        data = pki.server.cert_path.read_bytes().replace(b"MII", b"MIX", 1)
        (tmp / "corrupt.pem").write_bytes(data)
        return ServerTLSFiles(str(tmp / "corrupt.pem"), key), "corrupt.pem: not a valid PEM certificate"
    if problem == "mismatch":
        return ServerTLSFiles(cert, str(pki.client.key_path)), "does not match the certificate in"
    if problem == "expired":
        old = pki.root.issue(tmp / "old", "localhost", dns=["localhost"], expired=True)
        return files_for(old), "cert.pem: certificate expired on"
    if problem == "encrypted":
        from cryptography.hazmat.primitives import serialization

        (tmp / "enc.pem").write_bytes(
            pki.server.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        return ServerTLSFiles(cert, str(tmp / "enc.pem")), "enc.pem: the private key is encrypted"
    if problem == "bad-client-ca":
        return files_for(pki.server, clientCA=key), "no PEM certificate in it (client CA)"
    raise AssertionError(problem)


PROBLEMS = ["missing", "directory", "not-pem", "half-written", "corrupt", "mismatch", "expired", "encrypted", "bad-client-ca"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_unservable_files_are_one_line_errors_naming_the_file(pki: PKI, tmp_path: Path, problem: str) -> None:
    files, fragment = _bad_files(pki, tmp_path, problem)
    with pytest.raises(CertificateError) as caught:
        loadServerCertificate(files)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_named(pki: PKI, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    shutil.copy(pki.server.key_path, key)
    key.chmod(0)
    with pytest.raises(CertificateError, match=f"{re.escape(str(key))}: permission denied"):
        loadServerCertificate(ServerTLSFiles(str(pki.server.cert_path), str(key)))


def test_a_certificate_not_yet_valid_is_refused(pki: PKI) -> None:
    """A clock a day behind the certificate (or a certificate from the future) is caught at start."""
    yesterday = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    with pytest.raises(CertificateError, match="not valid before"):
        loadServerCertificate(files_for(pki.server), now=yesterday)


# ---------------------------------------------------------- 3. the context: options, handshakes


def server_connection(files: ServerTLSFiles) -> SSL.Connection:
    """A server-side OpenSSL connection as a TLS listener would make it, on memory BIOs."""
    tls_protocol = SimpleNamespace(factory=SimpleNamespace(wrappedFactory=Factory()))
    connection = ServerCertificate(files).serverConnectionForTLS(tls_protocol)
    connection.set_app_data(tls_protocol)
    connection.set_accept_state()
    return connection


def client_connection(
    pki: PKI, version: int | None = None, client: Issued | None = None, alpn=(b"http/1.1",)
) -> SSL.Connection:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if version is not None:
        context.set_min_proto_version(version)
        context.set_max_proto_version(version)
        if version < SSL.TLS1_2_VERSION:
            context.set_cipher_list(b"DEFAULT@SECLEVEL=0")
    context.load_verify_locations(pki.ca)
    context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    if client is not None:
        context.use_certificate_chain_file(str(client.cert_path))
        context.use_privatekey_file(str(client.key_path))
    if alpn:
        context.set_alpn_protos(list(alpn))
    connection = SSL.Connection(context)
    connection.set_tlsext_host_name(b"localhost")
    connection.set_connect_state()
    return connection


def handshake(server: SSL.Connection, client: SSL.Connection) -> None:
    """Run the handshake between two memory-BIO connections; raises ``SSL.Error`` if refused."""
    done = set()
    for _ in range(20):
        for conn, peer in ((client, server), (server, client)):
            if conn not in done:
                try:
                    conn.do_handshake()
                    done.add(conn)
                except SSL.WantReadError:
                    pass
            try:
                peer.bio_write(conn.bio_read(65536))
            except SSL.WantReadError:
                pass
        if len(done) == 2:
            # TLS 1.3: the server learns of a refused client certificate only on the next read.
            for conn, peer in ((client, server), (server, client)):
                try:
                    conn.send(b"x")
                    peer.bio_write(conn.bio_read(65536))
                    peer.recv(1)
                except SSL.WantReadError:
                    pass
            return
    raise AssertionError("handshake did not finish")


def test_context_refuses_compression_and_renegotiation(pki: PKI) -> None:
    context = loadServerCertificate(files_for(pki.server)).options.getContext()
    options = context.set_options(0)  # returns the options in force
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_NO_RENEGOTIATION


def test_only_forward_secret_aead_suites_are_offered(pki: PKI) -> None:
    ciphers = server_connection(files_for(pki.server)).get_cipher_list()
    assert ciphers, "no ciphers at all"
    for name in ciphers:
        assert name.startswith(("TLS_", "ECDHE-", "DHE-")), name  # TLS 1.3 suites are all ephemeral
        assert "GCM" in name or "CHACHA20" in name, name
    assert not any(re.search(r"CBC|SHA$|RC4|3DES|NULL|EXPORT|PSK", name) for name in ciphers)


@pytest.mark.parametrize(
    "min_version, client_version, accepted",
    [
        ("1.2", SSL.TLS1_VERSION, False),
        ("1.2", SSL.TLS1_1_VERSION, False),
        ("1.2", SSL.TLS1_2_VERSION, True),
        ("1.2", SSL.TLS1_3_VERSION, True),
        ("1.3", SSL.TLS1_2_VERSION, False),
        ("1.3", SSL.TLS1_3_VERSION, True),
    ],
)
def test_tls_versions(pki: PKI, min_version: str, client_version: int, accepted: bool) -> None:
    """TLS 1.2 is the floor (``--tls-min-version 1.3`` raises it); 1.0 and 1.1 never complete."""
    server = server_connection(files_for(pki.server, minVersion=min_version))
    client = client_connection(pki, client_version)
    if accepted:
        handshake(server, client)
        assert server.get_protocol_version() == client_version
    else:
        with pytest.raises(SSL.Error):
            handshake(server, client)


def test_tls_13_is_preferred_and_alpn_is_http_11(pki: PKI) -> None:
    server, client = server_connection(files_for(pki.server)), client_connection(pki, alpn=(b"h2", b"http/1.1"))
    handshake(server, client)
    assert client.get_protocol_version_name() == "TLSv1.3"
    assert client.get_alpn_proto_negotiated() == b"http/1.1"
    # The client verified the whole chain against the root alone: the intermediate was sent.
    assert [c.subject.rfc4514_string() for c in client.get_verified_chain(as_cryptography=True)] == [
        pki.server.subject, pki.intermediate.cert.subject.rfc4514_string(), pki.root.cert.subject.rfc4514_string(),
    ]  # fmt: skip


@implementer(ISSLTransport)
class _TLSTransport:
    """Just enough of a TLS transport for ``clientCertificateSubject``."""

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection

    def getHandle(self) -> SSL.Connection:
        return self._connection


def test_client_certificates_from_the_client_ca_are_required(pki: PKI) -> None:
    """With a client CA, only a client presenting a certificate it issued completes the handshake."""
    files = files_for(pki.server, clientCA=pki.ca)
    server = server_connection(files)
    handshake(server, client_connection(pki, client=pki.client))
    # ...and its verified subject is what the rest of stproxy sees.
    request = SimpleNamespace(transport=_TLSTransport(server), channel=SimpleNamespace(transport=None))
    assert clientCertificateSubject(request) == "CN=alice,O=stproxy tests"
    for client in (None, pki.stranger):
        with pytest.raises(SSL.Error):
            handshake(server_connection(files), client_connection(pki, client=client))


def test_no_subject_without_a_verified_client_certificate(pki: PKI) -> None:
    server = server_connection(files_for(pki.server))
    handshake(server, client_connection(pki, client=pki.client))  # not asked for, so not sent
    assert clientCertificateSubject(SimpleNamespace(transport=_TLSTransport(server))) is None
    plain = SimpleNamespace(transport=SimpleNamespace(), channel=SimpleNamespace(transport=None))
    assert clientCertificateSubject(plain) is None


# --------------------------------------------------------------------------------- 4. reloading


def test_reload_swaps_the_certificate_for_new_handshakes_only(pki: PKI, tmp_path: Path) -> None:
    """An open connection keeps its certificate; the next handshake gets the new one."""
    first = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"])
    certificate = ServerCertificate(files_for(first))
    old = certificate.serverConnectionForTLS(SimpleNamespace(factory=SimpleNamespace(wrappedFactory=Factory())))
    assert not certificate.changedOnDisk()
    renewed = pki.intermediate.issue(tmp_path / "new", "renewed")
    _install(renewed, first)
    assert certificate.changedOnDisk()
    assert certificate.reload().subject == "CN=renewed,O=stproxy tests"
    assert not certificate.changedOnDisk()
    assert old.get_context() is not certificate.current.options.getContext()

    # A key that does not match: refused, and the renewed certificate stays.
    shutil.copy(pki.client.key_path, first.key_path)
    with pytest.raises(CertificateError, match="does not match"):
        certificate.reload()
    assert certificate.current.subject == "CN=renewed,O=stproxy tests"
    assert not certificate.changedOnDisk(), "a failed attempt is not retried until the files change again"


def _install(new: Issued, live: Issued) -> None:
    """Replace ``live``'s files with ``new``'s as certbot does: new files renamed into place."""
    for source, target in ((new.cert_path, live.cert_path), (new.key_path, live.key_path)):
        temporary = target.with_suffix(".tmp")
        shutil.copy(source, temporary)
        os.replace(temporary, target)


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple] = []

    def callFromThread(self, f, *args) -> None:
        self.fromThread.append((f, args))


def test_reload_service_polls_files_and_handles_sighup(pki: PKI, tmp_path: Path) -> None:
    """
    The service reloads when the files change (on its reactor's clock), logs a failed reload with
    the reason and keeps serving, and while running owns SIGHUP, passing it on to the previous
    handler and putting that back when it stops.
    """
    live = pki.intermediate.issue(tmp_path / "live", "localhost")
    certificate = ServerCertificate(files_for(live))
    reactor, events = _Reactor(), []
    service = TLSService(reactor, {"ssl:8443": certificate}, 5.0, events.append)
    previous_calls = []
    previous = signal.signal(signal.SIGHUP, lambda *args: previous_calls.append(args))
    try:
        service.startService()
        assert "valid until" in events[-1]["log_format"]
        assert signal.getsignal(signal.SIGHUP) == service._onSIGHUP
        _install(pki.intermediate.issue(tmp_path / "b", "renewed"), live)
        reactor.advance(5)
        assert certificate.current.subject == "CN=renewed,O=stproxy tests"
        assert events[-1]["log_format"].startswith("TLS certificate reloaded")
        assert events[-1]["why"] == "files changed"

        live.cert_path.write_text("-----BEGIN CERTIFICATE-----\nMIIB")  # half-written
        reactor.advance(5)
        assert events[-1]["log_level"].name == "error"
        assert "no PEM certificate" in events[-1]["reason"]
        assert certificate.current.subject == "CN=renewed,O=stproxy tests"

        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: reactor.fromThread, 5)
        assert reactor.fromThread == [(service.reloadAll, ("SIGHUP",))]
        assert len(previous_calls) == 1, "the earlier SIGHUP handler is chained"
    finally:
        service.stopService()
        restored = signal.getsignal(signal.SIGHUP)
        signal.signal(signal.SIGHUP, previous)
    assert restored is not service._onSIGHUP and restored.__name__ == "<lambda>"
    assert not reactor.getDelayedCalls()


# --------------------------------------------------------------------- 5. options and redirects


def parse(*argv: str) -> Options:
    options = Options(environ={})
    options.exitOnError = False
    options.parseOptions(list(argv))
    return options


def test_tls_options_build_the_edge(pki: PKI) -> None:
    options = parse(
        "--listen", "ssl:0", *pki.server_args(), "--listen", "tcp:0", "--redirect-http", "tcp:0",
        "--hsts", "600", "--tls-client-ca", pki.ca, "--tls-min-version", "1.3",
        "--upstream", "https://streamlit.internal:8501", "--upstream-ca", pki.ca,
    )  # fmt: skip
    edge = options.config.tls
    assert list(edge.listeners) == ["ssl:0"]
    assert edge.listeners["ssl:0"].minVersion == "1.3"
    assert edge.listeners["ssl:0"].clientCA == pki.ca
    assert (edge.hsts, edge.redirect, edge.upstreamCA) == (600, "tcp:0", pki.ca)
    assert options.config.listen == ("ssl:0", "tcp:0")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--tls-cert", "x.pem"], "--tls-cert needs a TLS listener"),
        (["--hsts", "60"], "--hsts needs a TLS listener"),
        (["--redirect-http", "tcp:80"], "--redirect-http needs a TLS listener"),
        (["--listen", "ssl:0", "SERVER", "--hsts", "a year"], "--hsts a year"),
        (["--listen", "ssl:0", "SERVER", "--tls-min-version", "1.1"], "choose 1.2 or 1.3"),
        (["--listen", "ssl:0", "SERVER", "--tls-reload-interval", "-1"], "--tls-reload-interval -1"),
        (["--listen", "ssl:0", "SERVER", "--tls-reload-interval", "nan"], "--tls-reload-interval nan"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "ssl:80"], "must be a plain listener"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "nonsense:1"], "--redirect-http nonsense:1"),
        (["--listen", "ssl:0", "SERVER", "--acme-webroot", "/tmp"], "--acme-webroot needs --redirect-http"),
        (["--listen", "ssl:0", "SERVER", "--redirect-port", "443"], "--redirect-port needs --redirect-http"),
        (["--listen", "ssl:0", "SERVER", "--redirect-http", "tcp:80", "--redirect-port", "0"], "--redirect-port 0"),
        (["--upstream-ca", "CA"], "--upstream-ca is for an https:// upstream"),
        (["--upstream-insecure"], "--upstream-insecure is for an https:// upstream"),
        (["--upstream", "https://h:1", "--upstream-ca", "/nope.pem"], "--upstream-ca: /nope.pem: no such file"),
        (["--listen", "ssl:0:method=SSLv3_METHOD", "SERVER"], "--listen ssl:0:method=SSLv3_METHOD: method="),
    ],
)
def test_tls_flag_mistakes_are_usage_errors(pki: PKI, argv: list[str], fragment: str) -> None:
    expanded = []
    for arg in argv:
        expanded += pki.server_args() if arg == "SERVER" else [pki.ca if arg == "CA" else arg]
    with pytest.raises(usage.UsageError, match=re.escape(fragment)):
        parse(*expanded)


@pytest.mark.parametrize(
    "host, port, target, location",
    [
        (b"app.example", 443, b"/", b"https://app.example/"),
        (b"app.example:80", 443, b"/a?b=c", b"https://app.example/a?b=c"),
        (b"app.example:8080", 8443, b"/x/y?q=1&r=%20", b"https://app.example:8443/x/y?q=1&r=%20"),
        (b"127.0.0.1:8080", 8443, b"/", b"https://127.0.0.1:8443/"),
        (b"[::1]:8080", 8443, b"/", b"https://[::1]:8443/"),
    ],
)
def test_redirect_location(host: bytes, port: int, target: bytes, location: bytes) -> None:
    """The browser's host, the TLS listener's port (none for 443), the path and query as sent."""
    assert httpsLocation(host, port, target) == location


@pytest.mark.parametrize("host", [b"evil.example/x", b"a@b", b"", b"host:port", b"-x.example"])
def test_redirect_refuses_hosts_that_are_not_hosts(host: bytes) -> None:
    with pytest.raises(ValueError):
        httpsLocation(host, 443, b"/")


def test_make_service_builds_tls_listeners_with_stproxys_own_context(pki: PKI, tmp_path: Path) -> None:
    """
    Without starting anything: the ssl: listener is an SSL endpoint on the listener's
    ServerCertificate (never Twisted's own ssl: parser), beside a plain one; the redirect
    listener and the reload service are children; the site sends HSTS.
    """
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.testing import MemoryReactorClock

    from stproxy.edge.reload import TLSService as ReloadService
    from stproxy.tap import makeService

    reactor = MemoryReactorClock()
    options = parse(
        "--listen", "ssl:0:interface=127.0.0.1:backlog=7", *pki.server_args(), "--listen", "tcp:0",
        "--redirect-http", "tcp:0", "--hsts", "60", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    service = makeService(options, reactor)
    listeners = {s.name: s for s in service if isinstance(s, StreamServerEndpointService)}
    assert {"listener-0", "listener-1", "redirect-http"} <= set(listeners)
    assert listeners["listener-0"].factory.hstsHeader == b"max-age=60"
    assert any(isinstance(s, ReloadService) for s in service)
    service.privilegedStartService()
    try:
        [(port, _, contextFactory, backlog, interface)] = reactor.sslServers
        assert isinstance(contextFactory, ServerCertificate)
        assert contextFactory.files == options.config.tls.listeners[options.config.listen[0]]
        assert (port, backlog, interface) == (0, 7, "127.0.0.1")
        assert len(reactor.tcpServers) == 2  # the plain listener and the redirect
    finally:
        service.stopService()


def test_redirect_port_names_the_published_https_port(pki: PKI) -> None:
    """Behind a port mapping (container 8443 published as 443) redirects name the public port."""
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.testing import MemoryReactorClock
    from twisted.web.test.requesthelper import DummyRequest

    from stproxy.tap import makeService

    options = parse(
        "--listen", "ssl:8443", *pki.server_args(), "--redirect-http", "tcp:8080",
        "--redirect-port", "443", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    service = makeService(options, MemoryReactorClock())
    [redirect] = [s for s in service if isinstance(s, StreamServerEndpointService) and s.name == "redirect-http"]
    request = DummyRequest([b"app"])
    request.uri = b"/app?x=1"
    request.requestHeaders.setRawHeaders(b"host", [b"app.example:8080"])
    redirect.factory.resource.render(request)
    assert request.responseHeaders.getRawHeaders(b"location") == [b"https://app.example/app?x=1"]


def test_redirect_listener_answers_acme_challenges_from_the_webroot(tmp_path: Path) -> None:
    """With --acme-webroot, certbot's HTTP-01 token files are served; nothing else from disk."""
    from twisted.web.test.requesthelper import DummyRequest

    from stproxy.edge.redirect import RedirectToHTTPS

    challenges = tmp_path / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / "tok_en-1").write_text("tok_en-1.thumbprint")
    (tmp_path / "secret").write_text("no")
    resource = RedirectToHTTPS(lambda: 443, str(tmp_path))

    def get(target: bytes) -> tuple[int, bytes, DummyRequest]:
        request = DummyRequest(target.split(b"/")[1:])
        request.uri = target
        request.requestHeaders.setRawHeaders(b"host", [b"app.example"])
        body = resource.render(request)
        return request.responseCode or 200, body, request

    code, body, _ = get(b"/.well-known/acme-challenge/tok_en-1")
    assert (code, body) == (200, b"tok_en-1.thumbprint")
    assert get(b"/.well-known/acme-challenge/..%2Fsecret")[0] == 404
    assert get(b"/.well-known/acme-challenge/missing")[0] == 404
    code, _, request = get(b"/secret?x")
    assert code == 308
    assert request.responseHeaders.getRawHeaders(b"location") == [b"https://app.example/secret?x"]


class _FakeTLSEndpoint:
    """Stands for wrapClientTLS(...): hands out the factory, and a Deferred the test fires."""

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.connecting = Deferred()
        self.factory = None

    def connect(self, factory):
        self.factory = factory
        return self.connecting


class _FakeTLSTransport:
    def __init__(self) -> None:
        self.aborted = False
        self.wrappedProtocol = None

    def getPeer(self):
        return "peer"

    def abortConnection(self) -> None:
        self.aborted = True


def _handshaken():
    from twisted.internet.protocol import Protocol

    from stproxy.upstream.tls import _HandshakenEndpoint

    fake = _FakeTLSEndpoint()
    made = []

    class Real(Protocol):
        def connectionMade(self) -> None:
            made.append(self)

    done = _HandshakenEndpoint(fake).connect(Factory.forProtocol(Real))
    return fake, done, made


def test_tls_connect_fires_only_after_the_handshake() -> None:
    """The WebSocket leg's protocol starts (and sends its upgrade) only over a verified connection."""
    fake, done, made = _handshaken()
    placeholder = fake.factory.buildProtocol(None)
    transport = _FakeTLSTransport()
    placeholder.makeConnection(transport)
    fake.connecting.callback(placeholder)
    assert not done.called and made == []
    placeholder.handshakeCompleted()
    [real] = made
    assert done.result is real and transport.wrappedProtocol is real and real.transport is transport


def test_tls_connect_fails_with_the_handshakes_reason() -> None:
    from twisted.python.failure import Failure

    fake, done, made = _handshaken()
    placeholder = fake.factory.buildProtocol(None)
    placeholder.makeConnection(_FakeTLSTransport())
    placeholder.connectionLost(Failure(SSL.Error("certificate verify failed")))
    failures = []
    done.addErrback(failures.append)
    assert failures[0].check(SSL.Error) and made == []


def test_cancelling_a_tls_connect_aborts_it_at_any_stage() -> None:
    from twisted.internet.defer import CancelledError

    for stage in ("tcp", "handshake"):
        fake, done, made = _handshaken()
        transport = _FakeTLSTransport()
        if stage == "handshake":
            placeholder = fake.factory.buildProtocol(None)
            placeholder.makeConnection(transport)
            fake.connecting.callback(placeholder)
        failures = []
        done.addErrback(failures.append)
        done.cancel()
        assert failures[0].check(CancelledError), stage
        assert transport.aborted == (stage == "handshake")
        if stage == "tcp":
            assert fake.connecting.called  # cancelled (its own CancelledError, handled above)
            fake.connecting.addErrback(lambda f: None)


# ====================================================================== end to end, real processes


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", *args], capture_output=True, text=True, timeout=timeout)


def https_url(port: int, path: str) -> list[str]:
    """curl arguments for https://localhost:PORT/path with localhost pinned to 127.0.0.1."""
    return ["--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}{path}"]


def s_client(port: int, *args: str) -> subprocess.CompletedProcess:
    """``openssl s_client`` with stdin closed: it handshakes, prints the session and hangs up."""
    command = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=20)


def negotiated(result: subprocess.CompletedProcess) -> tuple[str, str] | None:
    """(protocol, cipher) from s_client's output, or ``None`` if no session was set up."""
    match = re.search(r"New, (TLSv[\d.]+), Cipher is (\S+)", result.stdout)
    return (match.group(1), match.group(2)) if match else None


def headers_of(curl_output: str) -> dict[str, str]:
    """The response headers in ``curl -i`` output (read as text, so lines end in ``\\n``)."""
    lines = curl_output.replace("\r\n", "\n").split("\n\n")[0].split("\n")[1:]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert "content-type" in headers, curl_output
    return headers


def wait_until_reloadable(proxy: ProxyProcess) -> None:
    """
    Wait for the line logged once SIGHUP is handled: under twistd the listeners announce
    themselves before the reactor runs, and a SIGHUP before the handler would end the process.
    """
    proxy.wait_for_output(r"TLS certificate for \S+: .*, valid until")


def wait_for_ports(proxy: ProxyProcess, count: int) -> list[int]:
    return wait_until(lambda: len(proxy.ports) >= count and proxy.ports, 10, message=proxy.output)


class WebSocketClient:
    """A minimal RFC 6455 client on a blocking TLS socket: a handshake, unfragmented frames."""

    def __init__(self, port: int, cafile: str, path: str = "/_stcore/stream", protocols=("streamlit",)) -> None:
        context = ssl.create_default_context(cafile=cafile)
        self.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost"
        )
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"localhost:{port}"
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\nOrigin: https://{host}\r\n\r\n".encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        if self.status == 101:
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            assert self.headers["sec-websocket-accept"] == accept

    @property
    def protocol(self) -> str | None:
        return self.headers.get("sec-websocket-protocol")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed")
        self._buffer += data

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send(self, payload: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes([0x80 | opcode, 0x80 | length])
        elif length < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def receive(self) -> tuple[int, bytes]:
        """The next data frame (opcode, payload); pings are answered, a close raises."""
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._take(2), "big")
            elif length == 127:
                length = int.from_bytes(self._take(8), "big")
            payload = self._take(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self.send(payload, 0xA)
            elif opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload[:2].hex()} {payload[2:]!r}")
            elif opcode != 0xA:
                return opcode, payload

    def close(self) -> None:
        try:
            self.send(b"\x03\xe8", 0x8)
        except OSError:
            pass
        self.sock.close()


def rerun_until_script_finished(ws: WebSocketClient) -> list[str]:
    """Ask Streamlit to run the app and collect the message types until the run finishes."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws.send(BackMsg(rerun_script=ClientState(query_string="", page_script_hash="")).SerializeToString())
    kinds: list[str] = []
    while "script_finished" not in kinds:
        opcode, payload = ws.receive()
        assert opcode == 0x2
        kinds.append(ForwardMsg.FromString(payload).WhichOneof("type"))
    return kinds


def peer_certificate(port: int, cafile: str) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is served (verified against ``cafile``)."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            return sock.getpeercert(binary_form=True)


needs_tools = pytest.mark.skipif(not (OPENSSL and CURL), reason="needs the openssl and curl commands")


# --------------------------------------------------- 6. TLS in front of a real Streamlit


@pytest.fixture(scope="module")
def tls_proxy(pki: PKI, streamlit: StreamlitProcess) -> Iterator[ProxyProcess]:
    """``ssl:`` and ``tcp:`` listeners side by side, a redirect listener and HSTS, before Streamlit."""
    proxy = start_proxy(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--redirect-http", "tcp:0:interface=127.0.0.1",
        "--hsts", "31536000",
        "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    try:
        wait_for_ports(proxy, 3)
        yield proxy
    finally:
        proxy.stop()


@needs_tools
def test_curl_gets_health_over_https_with_hsts(pki: PKI, tls_proxy: ProxyProcess) -> None:
    """curl trusting only the root CA gets Streamlit's health answer, with HSTS, over TLS."""
    tls_port, plain_port, _ = tls_proxy.ports
    result = curl("-i", "--cacert", pki.ca, *https_url(tls_port, "/_stcore/health"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
    assert result.stdout.endswith("ok")
    assert headers_of(result.stdout)["strict-transport-security"] == "max-age=31536000"

    plain = curl("-i", f"http://127.0.0.1:{plain_port}/_stcore/health")
    assert plain.stdout.startswith("HTTP/1.1 200"), plain.stdout
    assert "strict-transport-security" not in headers_of(plain.stdout), "HSTS over plain HTTP"


@needs_tools
def test_old_protocols_are_refused_and_tls13_is_negotiated(pki: PKI, tls_proxy: ProxyProcess) -> None:
    port = tls_proxy.port
    for old in ("-tls1", "-tls1_1"):
        result = s_client(port, old, "-cipher", "DEFAULT@SECLEVEL=0")
        assert negotiated(result) in (None, ("(NONE)", "(NONE)")), result.stdout
        assert "alert protocol version" in result.stderr, result.stderr  # the server said no
    assert negotiated(s_client(port, "-CAfile", pki.ca)) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    protocol, cipher = negotiated(s_client(port, "-tls1_2", "-CAfile", pki.ca))
    assert protocol == "TLSv1.2" and cipher.startswith("ECDHE-") and "GCM" in cipher
    static_rsa = s_client(port, "-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA")
    assert negotiated(static_rsa) in (None, ("(NONE)", "(NONE)")), static_rsa.stdout


def test_wss_gets_the_streamlit_subprotocol_from_real_streamlit(pki: PKI, tls_proxy: ProxyProcess) -> None:
    """HTTPS and WSS share the port: the Streamlit stream opens over TLS and the app runs."""
    ws = WebSocketClient(tls_proxy.port, pki.ca, protocols=("streamlit", "PLACEHOLDER_AUTH_TOKEN"))
    try:
        assert ws.status == 101, ws.headers
        assert ws.protocol == "streamlit"
        assert "new_session" in rerun_until_script_finished(ws)
    finally:
        ws.close()


def test_http_listener_redirects_to_https_with_308(tls_proxy: ProxyProcess) -> None:
    tls_port, _, redirect_port = tls_proxy.ports
    for method in ("GET", "POST"):
        with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as sock:
            sock.sendall(
                f"{method} /some/page?a=1&b=%20x HTTP/1.1\r\nHost: app.test:{redirect_port}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        head = response.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
        assert head[0] == "HTTP/1.1 308 Permanent Redirect", head
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in head[1:])}
        assert headers["location"] == f"https://app.test:{tls_port}/some/page?a=1&b=%20x"
        assert "strict-transport-security" not in headers


# ------------------------------------------------------------- 7. client certificates (mTLS)


@pytest.fixture(scope="module")
def mtls_proxy(pki: PKI, streamlit: StreamlitProcess) -> Iterator[ProxyProcess]:
    proxy = start_proxy(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--tls-client-ca", pki.ca, "--tls-min-version", "1.3",
        "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    try:
        yield proxy
    finally:
        proxy.stop()


@needs_tools
def test_mtls_accepts_the_client_certificate_and_refuses_others(pki: PKI, mtls_proxy: ProxyProcess) -> None:
    url = https_url(mtls_proxy.port, "/_stcore/health")
    ok = curl("--cacert", pki.ca, "--cert", str(pki.client.cert_path), "--key", str(pki.client.key_path), *url)
    assert (ok.returncode, ok.stdout) == (0, "ok"), ok.stderr
    for client in ([], ["--cert", str(pki.stranger.cert_path), "--key", str(pki.stranger.key_path)]):
        refused = curl("--cacert", pki.ca, *client, *url)
        assert refused.returncode != 0 and refused.stdout == "", refused
    # Without a certificate the server ends the handshake with an alert (under TLS 1.3 the client
    # only reads it after its side is done, so s_client must stay to read: -ign_eof).
    result = s_client(mtls_proxy.port, "-CAfile", pki.ca, "-ign_eof")
    assert "alert certificate required" in result.stderr, result.stderr


@needs_tools
def test_tls_min_version_13_refuses_tls12(pki: PKI, mtls_proxy: ProxyProcess) -> None:
    result = s_client(mtls_proxy.port, "-tls1_2", "-CAfile", pki.ca)
    assert negotiated(result) in (None, ("(NONE)", "(NONE)")), result.stdout
    assert "alert protocol version" in result.stderr


# ----------------------------------------------------------------------- 8. upstream over TLS


def start_tls_upstream(issued: Issued) -> tuple[subprocess.Popen, ProcessOutput, int]:
    """``tests/upstream_server.py`` serving HTTPS with ``issued``'s certificate."""
    command = [
        sys.executable, str(HERE / "upstream_server.py"),
        "--tls-cert", str(issued.cert_path), "--tls-key", str(issued.key_path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    output = ProcessOutput(process.stdout)
    match = output.wait_for(r'\{"port": (\d+)\}', 20, alive=lambda: process.poll() is None)
    if match is None:
        process.kill()
        raise RuntimeError(f"upstream_server.py did not start:\n{output.text()}")
    return process, output, int(match.group(1))


@pytest.fixture(scope="module")
def tls_upstreams(pki: PKI) -> Iterator[dict[str, int]]:
    """Two HTTPS test upstreams: one with a certificate for localhost, one naming another host."""
    good = pki.intermediate.issue(pki.directory / "upstream", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    wrong = pki.root.issue(pki.directory / "wrong-upstream", "other.test", dns=["other.test"])
    started = [start_tls_upstream(good), start_tls_upstream(wrong)]
    try:
        yield {"good": started[0][2], "wrong": started[1][2]}
    finally:
        for process, output, _ in started:
            process.terminate()
            process.wait(10)
            output.join()


def fetch_json(url: str, cafile: str) -> dict:
    context = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, timeout=20, context=context) as response:
        return json.load(response)


def test_https_upstream_with_a_private_ca_is_reached_and_told_https(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory
) -> None:
    """
    Browser →TLS→ stproxy →TLS (verified against --upstream-ca, by host name)→ upstream, and
    the upstream hears that the client came over HTTPS.
    """
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
        "--upstream", f"https://localhost:{tls_upstreams['good']}", "--upstream-ca", pki.ca,
    )  # fmt: skip
    info = fetch_json(f"https://127.0.0.1:{proxy.port}/echo?x=1", pki.ca)
    headers = {name.lower(): value for name, value in info["headers"]}
    assert info["target"] == "/echo?x=1"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["forwarded"].endswith("proto=https")


@pytest.mark.parametrize(
    "upstream, trust, why",
    [
        ("wrong", ["--upstream-ca", "CA"], r"IPAddressMismatch\(.*127\.0\.0\.1"),
        ("good", [], r"certificate verify failed"),  # the private CA is not in the platform's store
    ],
    ids=["names-another-host", "untrusted-ca"],
)
def test_https_upstream_failing_verification_is_refused_with_502(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory, upstream: str, trust: list[str], why: str
) -> None:
    """Both legs refuse an upstream whose certificate fails; the log line says why."""
    trust = [pki.ca if arg == "CA" else arg for arg in trust]
    proxy = proxy_factory("--upstream", f"https://127.0.0.1:{tls_upstreams[upstream]}", *trust)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{proxy.url}/echo", timeout=20)
    assert caught.value.code == 502
    proxy.wait_for_output(r"502 for GET /echo: upstream https://127\.0\.0\.1:\d+ could not be reached: .*" + why)


def test_upstream_insecure_connects_but_logs_what_it_would_have_refused(
    pki: PKI, tls_upstreams: dict[str, int], proxy_factory
) -> None:
    proxy = proxy_factory(
        "--upstream", f"https://127.0.0.1:{tls_upstreams['wrong']}", "--upstream-insecure"
    )
    proxy.wait_for_output(r"TLS certificates are NOT verified \(--upstream-insecure\)")
    with urllib.request.urlopen(f"{proxy.url}/echo", timeout=20) as response:
        assert response.status == 200
    proxy.wait_for_output(
        r"TLS certificate would be refused: unable to get issuer cert locally \(CN=other.test.*"
        r"certificate does not name 127\.0\.0\.1.*; connecting anyway"
    )


class RecordingWebSocketUpstream:
    """
    A TLS server in a thread that accepts every WebSocket handshake and records its head; any
    other request (the proxy's health checks) gets a plain 200.
    """

    def __init__(self, issued: Issued) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(issued.cert_path, issued.key_path)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[dict[str, str]] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            sock = self.context.wrap_socket(raw, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            raw.close()
            return
        lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = {n.lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
        if "sec-websocket-key" not in headers:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            sock.close()
            return
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        protocol = headers["sec-websocket-protocol"].split(",")[0].strip()
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + protocol.encode() + b"\r\n\r\n"
        )
        self.heads.append(headers)
        self.connections.append(sock)

    def close(self) -> None:
        self.listener.close()
        for sock in self.connections:
            sock.close()


def test_websocket_leg_uses_tls_upstream_and_says_https(pki: PKI, proxy_factory) -> None:
    """The WebSocket leg to an https:// upstream is TLS, verified, and carries proto=https."""
    upstream = RecordingWebSocketUpstream(pki.server)
    try:
        proxy = proxy_factory(
            "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
            "--upstream", f"https://127.0.0.1:{upstream.port}", "--upstream-ca", pki.ca,
        )  # fmt: skip
        ws = WebSocketClient(proxy.port, pki.ca)
        try:
            assert ws.status == 101, (ws.status, proxy.output())
            assert ws.protocol == "streamlit"
        finally:
            ws.close()
        [head] = upstream.heads
        assert head["x-forwarded-proto"] == "https"
        assert head["forwarded"].endswith("proto=https")
    finally:
        upstream.close()


def test_websocket_leg_refuses_an_upstream_naming_another_host_with_502(pki: PKI, proxy_factory) -> None:
    """The WebSocket leg checks the upstream certificate too: 502, and the log says why."""
    wrong = pki.root.issue(pki.directory / "wrong-ws-upstream", "other.test", dns=["other.test"])
    upstream = RecordingWebSocketUpstream(wrong)
    try:
        proxy = proxy_factory(
            "--listen", "ssl:0:interface=127.0.0.1", *pki.server_args(),
            "--upstream", f"https://127.0.0.1:{upstream.port}", "--upstream-ca", pki.ca,
        )  # fmt: skip
        ws = WebSocketClient(proxy.port, pki.ca)
        ws.close()
        assert ws.status == 502
        assert upstream.heads == [], "the handshake must not reach an unverified upstream"
        proxy.wait_for_output(r"WebSocket upstream https://127\.0\.0\.1:\d+ unreachable for .*IPAddressMismatch")
    finally:
        upstream.close()


# ------------------------------------------------------------------- 9. certificate reload


def test_sighup_reloads_while_an_open_websocket_keeps_relaying(
    pki: PKI, streamlit: StreamlitProcess, tmp_path: Path, proxy_factory
) -> None:
    """
    After the certificate files are replaced and SIGHUP is sent, a new connection gets the new
    certificate while a WebSocket opened before stays open and still relays; a broken
    replacement is refused with a log line and the last good certificate stays.
    """
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    first = der(live)
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1",
        "--tls-cert", str(live.cert_path), "--tls-key", str(live.key_path),
        "--tls-reload-interval", "0", "--upstream", f"127.0.0.1:{streamlit.port}",
    )  # fmt: skip
    port = proxy.port
    wait_until_reloadable(proxy)
    ws = WebSocketClient(port, pki.ca, protocols=("streamlit", "PLACEHOLDER_AUTH_TOKEN"))
    try:
        assert ws.status == 101
        rerun_until_script_finished(ws)
        renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
        _install(renewed, live)
        since = len(proxy.output())
        proxy.signal(signal.SIGHUP)
        proxy.wait_for_output(r"TLS certificate reloaded for ssl:0\S* \(SIGHUP\)", since=since)
        assert peer_certificate(port, pki.ca) == der(renewed) != first
        assert ws.sock.getpeercert(binary_form=True) == first
        assert "script_finished" in rerun_until_script_finished(ws), "the old WebSocket still relays"

        live.key_path.write_bytes(pki.client.key_path.read_bytes())  # a key for another certificate
        since = len(proxy.output())
        proxy.signal(signal.SIGHUP)
        proxy.wait_for_output(r"TLS certificate reload for ssl:0\S* failed \(SIGHUP\).*does not match", since=since)
        assert peer_certificate(port, pki.ca) == der(renewed)
        assert proxy.process.poll() is None
    finally:
        ws.close()


def test_changed_files_are_picked_up_without_a_signal(pki: PKI, tmp_path: Path, proxy_factory) -> None:
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    proxy = proxy_factory(
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={live.key_path}:certKey={live.cert_path}",
        "--tls-reload-interval", "0.2", "--upstream", "127.0.0.1:9",
    )  # fmt: skip
    assert peer_certificate(proxy.port, pki.ca) == der(live)
    renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    _install(renewed, live)
    proxy.wait_for_output(r"TLS certificate reloaded for .* \(files changed\)")
    assert peer_certificate(proxy.port, pki.ca) == der(renewed)


def test_sighup_reloads_under_python_m_stproxy(pki: PKI, tmp_path: Path, proxy_factory) -> None:
    """``python -m stproxy`` handles SIGHUP the same way, and keeps running."""
    live = pki.intermediate.issue(tmp_path / "live", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    proxy = proxy_factory(
        "--listen", "ssl:0:interface=127.0.0.1",
        "--tls-cert", str(live.cert_path), "--tls-key", str(live.key_path),
        "--tls-reload-interval", "0", "--upstream", "127.0.0.1:9",
        command=PYTHON_M_STPROXY,
    )  # fmt: skip
    renewed = pki.intermediate.issue(tmp_path / "renewed", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    _install(renewed, live)
    wait_until_reloadable(proxy)
    proxy.signal(signal.SIGHUP)
    proxy.wait_for_output(r"TLS certificate reloaded for .* \(SIGHUP\)")
    assert peer_certificate(proxy.port, pki.ca) == der(renewed)
    assert proxy.process.poll() is None


# ----------------------------------------------------------------------- 10. start-up errors


@pytest.mark.parametrize("runner", ["twistd", "python-m"])
@pytest.mark.parametrize("problem", ["missing", "mismatch", "expired", "not-pem"])
def test_bad_certificates_stop_start_up_with_one_line(pki: PKI, tmp_path: Path, problem: str, runner: str) -> None:
    """A missing, mismatched, expired or garbled certificate: one line naming the file, exit 2."""
    files, fragment = _bad_files(pki, tmp_path, problem)
    command = PYTHON_M_STPROXY if runner == "python-m" else None
    result = run_proxy(
        "--listen", "ssl:0", "--tls-cert", files.cert, "--tls-key", files.key, command=command
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == 2, result.stdout
    assert len(lines) == 1 and fragment in lines[0], result.stdout
