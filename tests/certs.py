"""
Throw-away X.509 material for TLS tests, generated with ``cryptography`` at test time.

Nothing here is ever written to the repository: tests pass a ``tmp_path``. EC P-256 keys keep
generation to about a millisecond each; ``key_type="rsa"`` gives RSA 2048 where a test needs
RSA cipher suites.

    ca = CertificateAuthority.create(tmp_path / "ca")
    server = ca.issue(tmp_path / "server", "localhost", dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue(tmp_path / "alice", "alice", client=True)
    curl(..., "--cacert", str(ca.cert_path), "--cert", str(client.cert_path), "--key", str(client.key_path))

``ca.intermediate(...)`` gives a CA signed by this one; certificates it issues are written as
a full chain (leaf, then the intermediate), as Let's Encrypt's ``fullchain.pem`` is.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "Issued", "new_key", "write_key", "write_certs"]

_DAY = datetime.timedelta(days=1)


def new_key(key_type: str = "ec"):
    """A fresh private key: EC P-256 (``"ec"``) or RSA 2048 (``"rsa"``)."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def write_key(path: Path, key) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def write_certs(path: Path, certs: Iterable[x509.Certificate]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stproxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class Issued:
    """A certificate and its key, as objects and as PEM files (the cert file holds the full chain)."""

    cert: x509.Certificate
    key: object
    cert_path: Path
    key_path: Path
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def subject(self) -> str:
        """The subject as RFC 4514 text, e.g. ``CN=alice,O=stproxy tests``."""
        return self.cert.subject.rfc4514_string()

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


@dataclass
class CertificateAuthority:
    """A CA that signs server and client certificates for one test."""

    cert: x509.Certificate
    key: object
    cert_path: Path
    directory: Path
    chain: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, common_name: str = "stproxy test CA") -> CertificateAuthority:
        """A self-signed root CA, its certificate written to ``directory/ca.pem``."""
        key = new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(cert, key, write_certs(directory / "ca.pem", [cert]), directory)

    def intermediate(self, common_name: str = "stproxy test intermediate") -> CertificateAuthority:
        """A CA signed by this one; what it issues is written with it as the chain."""
        key = new_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            self._builder(common_name, key.public_key(), now - _DAY, now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        directory = self.directory / "intermediate"
        return CertificateAuthority(
            cert, key, write_certs(directory / "ca.pem", [cert]), directory, [cert, *self.chain]
        )

    def _builder(self, common_name: str, public_key, not_before, not_after) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )

    def issue(
        self,
        directory: Path,
        common_name: str,
        dns: Iterable[str] = (),
        ips: Iterable[str] = (),
        client: bool = False,
        valid_days: float = 30,
        expired: bool = False,
        key_type: str = "ec",
        key=None,
    ) -> Issued:
        """
        A leaf certificate for ``common_name`` with the given SANs, written as ``directory/cert.pem``
        (leaf plus any intermediates) and ``directory/key.pem``.

        ``client=True`` makes a client-authentication certificate; ``expired=True`` one whose
        validity ended yesterday; ``key`` reuses an existing key (for a renewal with the same key).
        """
        key = key if key is not None else new_key(key_type)
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            not_before, not_after = now - 10 * _DAY, now - _DAY
        else:
            not_before, not_after = now - datetime.timedelta(hours=1), now + valid_days * _DAY
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = self._builder(common_name, key.public_key(), not_before, not_after)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        chain = [cert, *self.chain_for_leaf()]
        return Issued(
            cert,
            key,
            write_certs(directory / "cert.pem", chain),
            write_key(directory / "key.pem", key),
            chain,
        )

    def chain_for_leaf(self) -> list[x509.Certificate]:
        """What a server sends after its own certificate: the intermediates, never the root."""
        return [c for c in self.chain if c.issuer != c.subject]
