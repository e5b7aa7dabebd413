"""
The certificates of the TLS tests, made per test module with ``cryptography`` (``certs.py``)
in a temporary directory: a root CA, an intermediate that signs the server certificate (so a
proxy that sent only the leaf of ``fullchain.pem`` would fail verification), and client
certificates (the ``pki`` fixture of ``conftest.py``).

Also what several TLS test files share: broken certificate files for each start-up problem,
certbot-style renewal, and handshakes between OpenSSL objects in memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.protocol import Factory

from certs import CertificateAuthority, Issued
from stproxy.edge.certificates import ServerCertificate, ServerTLSFiles

__all__ = [
    "PKI",
    "PROBLEMS",
    "bad_files",
    "client_connection",
    "der",
    "files_for",
    "handshake",
    "install",
    "server_connection",
]


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


def files_for(issued: Issued, **kwargs) -> ServerTLSFiles:
    return ServerTLSFiles(str(issued.cert_path), str(issued.key_path), **kwargs)


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def bad_files(pki: PKI, tmp: Path, problem: str) -> tuple[ServerTLSFiles, str]:
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


def install(new: Issued, live: Issued) -> None:
    """Replace ``live``'s files with ``new``'s as certbot does: new files renamed into place."""
    for source, target in ((new.cert_path, live.cert_path), (new.key_path, live.key_path)):
        temporary = target.with_suffix(".tmp")
        shutil.copy(source, temporary)
        os.replace(temporary, target)


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
