"""
A TLS listener's certificate: read from PEM files, checked, and turned into
the OpenSSL context every new handshake on that listener uses.

The policy is fixed here rather than taken from Twisted's endpoint defaults,
so every TLS listener gets it however it was described: TLS 1.2 or newer
(1.3 when the client has it), forward-secret AEAD suites only, no TLS
compression, no renegotiation, ALPN C{http/1.1}, and, with a client CA,
no handshake without a client certificate that CA issued.

Files are checked the way an operator needs when something is wrong: each
problem is a L{CertificateError} whose one-line message names the file
(missing, unreadable, not PEM, key not matching its certificate, expired).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    AcceptableCiphers,
    CertificateOptions,
    DiffieHellmanParameters,
    TLSVersion,
)
from twisted.python.filepath import FilePath
from zope.interface import implementer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
    from twisted.protocols.tls import TLSMemoryBIOProtocol

#: The lowest TLS version a listener may be told to accept, by its C{--tls-min-version} name.
MIN_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}

#: Forward-secret AEAD suites only (Mozilla's "intermediate" list): the three
#: TLS 1.3 suites, then ECDHE (and, given C{dhParameters}, DHE) with AES-GCM or
#: ChaCha20-Poly1305.  No RSA key exchange, no CBC, no SHA-1 MACs.
CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(
    "TLS13-AES-128-GCM-SHA256:TLS13-AES-256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:"
    "!aNULL:!eNULL:!DSS:!PSK:!SRP:!SHA1"
)

#: What is offered by ALPN: never h2, over which a WebSocket upgrade cannot happen.
ALPN = [b"http/1.1"]

_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)


class CertificateError(ValueError):
    """A certificate, key or CA file that cannot be served; the message names the file."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CertificateError(f"{path}: no such file ({what})") from None
    except PermissionError:
        raise CertificateError(f"{path}: permission denied ({what})") from None
    except OSError as e:
        raise CertificateError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def loadCertificates(path: str, what: str = "certificate") -> list[x509.Certificate]:
    """
    Every certificate in the PEM file at C{path}, in order (a leaf then its
    chain, or a CA bundle); other PEM blocks, such as a key, are skipped.

    @raise CertificateError: if it cannot be read or holds no whole certificate.
    """
    data = _read(path, what)
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", data, re.DOTALL
    )
    if not blocks:
        raise CertificateError(f"{path}: no PEM certificate in it ({what})")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError:
        raise CertificateError(f"{path}: not a valid PEM certificate ({what})") from None


def loadPrivateKey(path: str) -> PrivateKeyTypes:
    """
    The private key in the PEM file at C{path} (which may also hold the certificate).

    @raise CertificateError: if it cannot be read, holds no key, or the key is
        encrypted (there is no one to type a passphrase in).
    """
    match = _PRIVATE_KEY.search(_read(path, "private key"))
    if match is None:
        raise CertificateError(f"{path}: no PEM private key in it")
    try:
        return serialization.load_pem_private_key(match.group(0), password=None)
    except TypeError:
        raise CertificateError(
            f"{path}: the private key is encrypted; give an unencrypted key"
        ) from None
    except (ValueError, crypto.Error):
        raise CertificateError(f"{path}: not a valid PEM private key") from None


def _publicBytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class ServerTLSFiles:
    """
    Where one TLS listener's certificate comes from, and its policy knobs.

    @ivar cert: PEM file with the certificate, optionally followed by its
        chain (Let's Encrypt's C{fullchain.pem}).
    @ivar key: PEM file with the private key (may be the same file as C{cert}).
    @ivar extraChain: more chain certificates, sent after those in C{cert}.
    @ivar clientCA: CA bundle; when set, clients must present a certificate it issued.
    @ivar dhParameters: PEM DH parameters, enabling the DHE suites.
    @ivar minVersion: C{"1.2"} or C{"1.3"}.
    """

    cert: str
    key: str
    extraChain: str | None = None
    clientCA: str | None = None
    dhParameters: str | None = None
    minVersion: str = "1.2"

    def paths(self) -> list[str]:
        """Every file the certificate is built from: what a reload watches."""
        candidates = (self.cert, self.key, self.extraChain, self.clientCA, self.dhParameters)
        return list(dict.fromkeys(p for p in candidates if p))


@dataclass(frozen=True)
class LoadedCertificate:
    """A certificate in service: the options its handshakes use, and what to log about it."""

    options: CertificateOptions
    subject: str
    notAfter: datetime.datetime
    fingerprint: str


def loadServerCertificate(
    files: ServerTLSFiles, now: datetime.datetime | None = None
) -> LoadedCertificate:
    """
    Read and check C{files} and build the context for them.

    Checked here, so that neither start-up nor a reload can put a broken
    certificate in service: every file readable and PEM, the key matching
    the leaf certificate, the leaf valid at C{now}.

    @raise CertificateError: naming the file and the problem.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    chain = loadCertificates(files.cert)
    key = loadPrivateKey(files.key)
    leaf = chain[0]
    if _publicBytes(leaf.public_key()) != _publicBytes(key.public_key()):
        raise CertificateError(
            f"{files.key}: private key does not match the certificate in {files.cert}"
        )
    if leaf.not_valid_after_utc < now:
        raise CertificateError(
            f"{files.cert}: certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if leaf.not_valid_before_utc > now:
        raise CertificateError(
            f"{files.cert}: certificate not valid before"
            f" {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    extra = chain[1:]
    if files.extraChain:
        extra += loadCertificates(files.extraChain, "extra certificate chain")
    clientCAs = loadCertificates(files.clientCA, "client CA") if files.clientCA else []
    dh = None
    if files.dhParameters:
        _read(files.dhParameters, "DH parameters")
        dh = DiffieHellmanParameters.fromFile(FilePath(files.dhParameters))
    # Twisted annotates these as pyOpenSSL's PKey and X509; the OpenSSL
    # context it hands them to takes cryptography's keys and certificates too.
    options = CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=leaf,  # type: ignore[arg-type]
        extraCertChain=extra,  # type: ignore[arg-type]
        verify=bool(clientCAs),
        caCerts=[crypto.X509.from_cryptography(c) for c in clientCAs] or None,
        requireCertificate=True,
        acceptableCiphers=CIPHERS,
        dhParameters=dh,
        raiseMinimumTo=MIN_VERSIONS[files.minVersion],
        acceptableProtocols=ALPN,
    )
    try:
        context = options.getContext()
    except SSL.Error as e:
        culprit = files.dhParameters or files.cert
        raise CertificateError(f"{culprit}: OpenSSL refused it: {_sslReason(e)}") from None
    context.set_options(SSL.OP_NO_RENEGOTIATION)
    for ca in clientCAs:
        context.add_client_ca(ca)  # named in the CertificateRequest, so clients pick the right one
    return LoadedCertificate(
        options=options,
        subject=leaf.subject.rfc4514_string(),
        notAfter=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
    )


def _sslReason(error: SSL.Error) -> str:
    reasons = [part[-1] for part in error.args[0] if isinstance(part, tuple)] if error.args else []
    return "; ".join(r for r in reasons if r) or str(error)


#: A file's modification time, size, inode and device; None when it is missing.
_Stamp = tuple[int, int, int, int] | None


@implementer(IOpenSSLServerConnectionCreator)
class ServerCertificate:
    """
    One TLS listener's connection creator, whose certificate can be replaced
    while it serves.

    Each handshake gets an C{SSL.Connection} on the context current at that
    moment; a reload swaps in a whole new context (a context cannot be changed
    once connections use it), so connections already open keep theirs and are
    never disturbed, and new ones get the new certificate.
    """

    def __init__(self, files: ServerTLSFiles, now: datetime.datetime | None = None) -> None:
        """@raise CertificateError: if C{files} cannot be served."""
        self.files = files
        self._stamp = self._fileStamp()
        self.current = loadServerCertificate(files, now)

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return self.current.options.serverConnectionForTLS(tlsProtocol)

    def reload(self, now: datetime.datetime | None = None) -> LoadedCertificate:
        """
        Load the files again and put the result in service.

        @raise CertificateError: the current certificate then stays in service.
        """
        self._stamp = self._fileStamp()
        self.current = loadServerCertificate(self.files, now)
        return self.current

    def changedOnDisk(self) -> bool:
        """
        Whether any file differs (size, time, inode: a certbot renewal points
        its symlinks at new files) from when it was last loaded or tried.
        """
        return self._fileStamp() != self._stamp

    def _fileStamp(self) -> tuple[_Stamp, ...]:
        stamps: list[_Stamp] = []
        for path in self.files.paths():
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev))
        return tuple(stamps)


__all__ = [
    "ALPN",
    "CIPHERS",
    "MIN_VERSIONS",
    "CertificateError",
    "LoadedCertificate",
    "ServerCertificate",
    "ServerTLSFiles",
    "loadCertificates",
    "loadPrivateKey",
    "loadServerCertificate",
]
