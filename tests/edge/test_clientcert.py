"""
Client certificates (C{--tls-client-ca}, stproxy.edge.clientcert): required from the client CA,
and the verified subject is what the rest of stproxy sees.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from OpenSSL import SSL
from twisted.internet.interfaces import ISSLTransport
from zope.interface import implementer

from pki import PKI, client_connection, files_for, handshake, server_connection
from stproxy.edge.clientcert import clientCertificateSubject


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
    """Without a client CA, or on a plain connection, no client certificate subject is reported."""
    server = server_connection(files_for(pki.server))
    handshake(server, client_connection(pki, client=pki.client))  # not asked for, so not sent
    assert clientCertificateSubject(SimpleNamespace(transport=_TLSTransport(server))) is None
    plain = SimpleNamespace(transport=SimpleNamespace(), channel=SimpleNamespace(transport=None))
    assert clientCertificateSubject(plain) is None
