"""
C{ssl:} listen descriptions, read by stproxy rather than by Twisted.

Twisted's own C{ssl:} parser builds a context with its endpoint defaults
(any cipher its default list allows, a C{sslmethod=} that can lower the
floor, no client certificates) and only the first certificate of C{certKey}.
stproxy parses the same syntax itself, accepts only the options that do not
weaken TLS, and builds an L{SSL4ServerEndpoint} whose connections come from a
L{stproxy.edge.certificates.ServerCertificate}: the one policy for every TLS
listener, a full chain from C{fullchain.pem}, and reloadable.

Every other description (C{tcp:}, C{unix:}, C{systemd:}, plugins) still goes
to L{serverFromString} unchanged.

Given a L{ConnectionLimit}, every listener counts its connections in it
(L{LimitedEndpoint}); an C{ssl:} one is then a TCP endpoint with TLS layered
above the count, as C{reactor.listenSSL} would layer it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint

from stproxy.edge.certificates import ServerCertificate, ServerTLSFiles
from stproxy.edge.connections import ConnectionLimit, LimitedEndpoint

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorSSL, IReactorTCP

    from stproxy.reactor import ProxyReactor

#: Options of Twisted's C{ssl:} syntax that stproxy accepts, in Twisted's positional order.
SSL_OPTIONS = (
    "port", "interface", "backlog", "privateKey", "certKey", "extraCertChain", "dhParameters",
)  # fmt: skip

#: Options refused because they could only weaken the TLS policy, and what to say instead.
_VERSIONS = "stproxy always negotiates TLS 1.2 or newer; --tls-min-version 1.3 raises the floor"
_REFUSED = {
    "sslmethod": _VERSIONS,
    "method": _VERSIONS,
    "ciphers": "stproxy only offers forward-secret AEAD cipher suites, which cannot be changed",
}


def _split(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Positional and keyword parts of an endpoint description, with Twisted's
    escaping: C{\\:} and C{\\=} are literal, and a value may hold C{=}.
    """
    fields: list[list[str]] = [[""]]
    chars = iter(description)
    for char in chars:
        if char == "\\":
            fields[-1][-1] += next(chars, "")
        elif char == ":":
            fields.append([""])
        elif char == "=" and len(fields[-1]) == 1:
            fields[-1].append("")
        else:
            fields[-1][-1] += char
    args = [f[0] for f in fields if len(f) == 1]
    kwargs = {f[0]: f[1] for f in fields if len(f) == 2}
    return args, kwargs


def checkPlainDescription(description: str) -> None:
    """
    Check a listen description that Twisted builds (C{tcp:}, C{unix:}, ...)
    without listening: Twisted's parser, plus the port range it leaves to
    C{bind()} (which would fail late, with a traceback).

    @raise ValueError: with a message fit for a usage error.
    """
    try:
        serverFromString(None, description)
    except Exception as e:
        raise ValueError(str(e) or type(e).__name__) from None
    args, kwargs = _split(description)
    if args[0].strip().lower() in ("tcp", "tcp6"):
        port = kwargs.get("port", args[1] if len(args) > 1 else "")
        if not (port.isascii() and port.isdigit() and int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a port number 0-65535")


def isSSLDescription(description: str) -> bool:
    """Whether C{description} is an C{ssl:} listener, which stproxy builds itself."""
    return endpointKind(description) == "ssl"


def endpointKind(description: str) -> str:
    """The kind of an endpoint description, lower-case: C{tcp}, C{ssl}, C{unix}..."""
    return description.split(":", 1)[0].strip().lower()


#: The listen queue a listener gets when its description names none: a burst
#: of browsers (six connections a page, everyone reconnecting after a
#: restart) must not find it full and wait a second for a SYN retry.
#: Twisted's default is 50; nginx asks for 511, the kernel caps it at
#: C{net.core.somaxconn}.
DEFAULT_BACKLOG = 511


def withDefaultBacklog(description: str) -> str:
    """C{description}, with L{DEFAULT_BACKLOG} when its kind takes a backlog and it names none."""
    if endpointKind(description) in ("tcp", "tcp6", "unix") and not re.search(
        r"(^|:)backlog=", description
    ):
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


@dataclass(frozen=True)
class SSLDescription:
    """
    An C{ssl:} listen description, parsed: where to listen, and which files
    it names (C{None} where the C{--tls-*} flags are to supply them).
    """

    port: int
    interface: str = ""
    backlog: int = DEFAULT_BACKLOG
    privateKey: str | None = None
    certKey: str | None = None
    extraCertChain: str | None = None
    dhParameters: str | None = None

    @classmethod
    def parse(cls, description: str) -> SSLDescription:
        """
        Parse C{ssl:PORT[:interface=ADDR][:backlog=N][:privateKey=KEY][:certKey=CERT]
        [:extraCertChain=CHAIN][:dhParameters=DH]}.

        Only the port may be given by position; anything that is not one of
        L{SSL_OPTIONS} is an error rather than ignored.

        @raise ValueError: with a message fit for a usage error.
        """
        args, kwargs = _split(description)
        if not args or args[0].strip().lower() != "ssl":
            raise ValueError("not an ssl: description")
        positional = args[1:]
        if len(positional) > 1:
            raise ValueError(
                f"only the port may be given without a name; write the rest as"
                f" name=value ({', '.join(SSL_OPTIONS[1:])})"
            )
        for name in kwargs:
            if name in _REFUSED:
                raise ValueError(f"{name}= is not accepted: {_REFUSED[name]}")
            if name not in SSL_OPTIONS:
                raise ValueError(f"unknown option {name}= (accepted: {', '.join(SSL_OPTIONS)})")
        if positional:
            if "port" in kwargs:
                raise ValueError("the port is given twice")
            kwargs["port"] = positional[0]
        port = kwargs.pop("port", None)
        if port is None or not port.isdigit() or int(port) > 65535:
            raise ValueError("needs a port number 0-65535, as in ssl:8443")
        backlog = kwargs.pop("backlog", str(DEFAULT_BACKLOG))
        if not backlog.isdigit() or int(backlog) < 1:
            raise ValueError(f"backlog={backlog}: must be a positive whole number")
        for name, value in kwargs.items():
            if not value:
                raise ValueError(f"{name}= needs a value")
        return cls(port=int(port), backlog=int(backlog), **kwargs)

    def files(
        self,
        cert: str | None = None,
        key: str | None = None,
        extraChain: str | None = None,
        clientCA: str | None = None,
        minVersion: str = "1.2",
    ) -> ServerTLSFiles:
        """
        The files this listener serves, the C{--tls-*} flags (the arguments)
        filling in what the description leaves out.

        C{privateKey=} alone means key and certificate share a file (Twisted's
        meaning); a description that names either file takes neither from the
        flags, so one listener never mixes a key and a certificate from two places.

        @raise ValueError: when no certificate is named anywhere.
        """
        certPath: str | None
        keyPath: str | None
        if self.privateKey or self.certKey:
            if not self.privateKey:
                raise ValueError("certKey= needs privateKey= (the private key file) too")
            certPath, keyPath = self.certKey or self.privateKey, self.privateKey
        elif cert or key:
            certPath, keyPath = cert or key, key or cert
        else:
            raise ValueError(
                "no certificate: add privateKey=KEY.pem:certKey=CERT.pem, or give"
                " --tls-cert and --tls-key"
            )
        assert certPath is not None and keyPath is not None
        return ServerTLSFiles(
            cert=certPath,
            key=keyPath,
            extraChain=self.extraCertChain or extraChain,
            clientCA=clientCA,
            dhParameters=self.dhParameters,
            minVersion=minVersion,
        )

    def endpoint(
        self, reactor: IReactorSSL, certificate: ServerCertificate
    ) -> IStreamServerEndpoint:
        """A server endpoint listening here with C{certificate}'s TLS."""
        return SSL4ServerEndpoint(
            reactor, self.port, certificate, backlog=self.backlog, interface=self.interface
        )

    def limitedEndpoint(
        self, reactor: IReactorTCP, certificate: ServerCertificate, limit: ConnectionLimit
    ) -> IStreamServerEndpoint:
        """The same, its connections counted in C{limit} below TLS."""
        tcp = TCP4ServerEndpoint(reactor, self.port, backlog=self.backlog, interface=self.interface)
        return LimitedEndpoint(tcp, limit, tls=certificate)


def listenerEndpoint(
    reactor: ProxyReactor,
    description: str,
    certificates: dict[str, ServerCertificate],
    limit: ConnectionLimit | None = None,
) -> IStreamServerEndpoint:
    """
    The endpoint for one C{--listen}: an C{ssl:} one from stproxy's own
    C{certificates} (by description), anything else from L{serverFromString};
    its connections counted in C{limit}, if given.
    """
    if isSSLDescription(description):
        ssl = SSLDescription.parse(description)
        if limit is not None:
            return ssl.limitedEndpoint(reactor, certificates[description], limit)
        return ssl.endpoint(reactor, certificates[description])
    endpoint: IStreamServerEndpoint = serverFromString(reactor, withDefaultBacklog(description))
    return endpoint if limit is None else LimitedEndpoint(endpoint, limit)


__all__ = [
    "DEFAULT_BACKLOG",
    "SSL_OPTIONS",
    "SSLDescription",
    "endpointKind",
    "isSSLDescription",
    "listenerEndpoint",
    "withDefaultBacklog",
]
