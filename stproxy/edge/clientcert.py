"""
Who a client certificate (C{--tls-client-ca}) was issued to, for the rest of
stproxy: only a certificate the listener verified counts, so this can name an
authenticated user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.x509 import Name
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import ISSLTransport

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport
    from twisted.web.iweb import IRequest


def _verifiedName(transport: ITransport | None) -> Name | None:
    """The subject of the client certificate verified on C{transport}, if any."""
    if transport is None or ISSLTransport(transport, None) is None:
        return None
    getHandle = getattr(transport, "getHandle", None)
    if getHandle is None:
        return None
    chain = getHandle().get_verified_chain(as_cryptography=True)
    if not chain:
        return None
    subject: Name = chain[0].subject
    return subject


def peerCertificateSubject(transport: ITransport | None) -> str | None:
    """
    The subject (RFC 4514, e.g. C{CN=alice,O=Example}) of the client
    certificate verified on C{transport}'s TLS handshake, or C{None} when it
    is not TLS or no certificate was verified.
    """
    subject = _verifiedName(transport)
    return None if subject is None else str(subject.rfc4514_string())


def _transportOf(request: IRequest) -> ITransport | None:
    transport = getattr(request, "transport", None)
    if transport is None:
        transport = getattr(getattr(request, "channel", None), "transport", None)
    return transport


def clientCertificateCommonName(request: IRequest) -> str | None:
    """The common name (CN) of C{request}'s verified client certificate, if it has one."""
    subject = _verifiedName(_transportOf(request))
    if subject is None:
        return None
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def clientCertificateSubject(request: IRequest) -> str | None:
    """
    Who the client certificate of C{request}'s connection was issued to
    (RFC 4514 subject), or C{None} without one.

    Only a certificate the listener's C{--tls-client-ca} verified counts, so
    this can name an authenticated user.  Works for WebSocket upgrades too,
    whose channel has already handed its transport to the relay.
    """
    return peerCertificateSubject(_transportOf(request))


__all__ = ["clientCertificateCommonName", "clientCertificateSubject", "peerCertificateSubject"]
