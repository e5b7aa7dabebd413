"""
A TLS listener's certificate (stproxy.edge.certificates): the file checks, each problem a
one-line error naming the file, and the context every handshake gets (versions, suites,
compression, renegotiation, ALPN, the full chain), shown by handshakes between OpenSSL objects
in memory.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
from pathlib import Path

import pytest
from OpenSSL import SSL

from pki import PKI, PROBLEMS, bad_files, client_connection, files_for, handshake, server_connection
from stproxy.edge.certificates import CertificateError, ServerTLSFiles, loadServerCertificate


def test_a_full_chain_file_serves_leaf_and_intermediate(pki: PKI) -> None:
    """A fullchain.pem gives the server certificate and sends its intermediate along with it."""
    loaded = loadServerCertificate(files_for(pki.server))
    assert loaded.subject == "CN=localhost,O=stproxy tests"
    assert loaded.options.extraCertChain == [pki.intermediate.cert]


def test_key_and_certificate_may_share_one_file(pki: PKI, tmp_path: Path) -> None:
    """One PEM file holding both the key and the certificate is accepted."""
    both = tmp_path / "both.pem"
    both.write_bytes(pki.server.key_path.read_bytes() + pki.server.cert_path.read_bytes())
    assert loadServerCertificate(ServerTLSFiles(str(both), str(both))).fingerprint == pki.server.fingerprint


@pytest.mark.parametrize("problem", PROBLEMS)
def test_unservable_files_are_one_line_errors_naming_the_file(pki: PKI, tmp_path: Path, problem: str) -> None:
    """
    Each kind of unusable certificate or key file gives a one-line error naming the file and the
    problem.
    """
    files, fragment = bad_files(pki, tmp_path, problem)
    with pytest.raises(CertificateError) as caught:
        loadServerCertificate(files)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_named(pki: PKI, tmp_path: Path) -> None:
    """A key file the proxy may not read gives a 'permission denied' error naming it."""
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


def test_context_refuses_compression_and_renegotiation(pki: PKI) -> None:
    """Every TLS listener turns off TLS compression and renegotiation."""
    context = loadServerCertificate(files_for(pki.server)).options.getContext()
    options = context.set_options(0)  # returns the options in force
    assert options & SSL.OP_NO_COMPRESSION
    assert options & SSL.OP_NO_RENEGOTIATION


def test_only_forward_secret_aead_suites_are_offered(pki: PKI) -> None:
    """
    A TLS listener offers only forward-secret AEAD cipher suites (GCM or ChaCha20), nothing CBC,
    RC4, 3DES, NULL, export or PSK.
    """
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
    """
    A modern client gets TLS 1.3, HTTP/1.1 through ALPN even when it offers h2, and the whole
    chain up to the root.
    """
    server, client = server_connection(files_for(pki.server)), client_connection(pki, alpn=(b"h2", b"http/1.1"))
    handshake(server, client)
    assert client.get_protocol_version_name() == "TLSv1.3"
    assert client.get_alpn_proto_negotiated() == b"http/1.1"
    # The client verified the whole chain against the root alone: the intermediate was sent.
    assert [c.subject.rfc4514_string() for c in client.get_verified_chain(as_cryptography=True)] == [
        pki.server.subject, pki.intermediate.cert.subject.rfc4514_string(), pki.root.cert.subject.rfc4514_string(),
    ]  # fmt: skip
