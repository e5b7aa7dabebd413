"""
The configuration of one proxy: frozen, typed, and checked when it is built.

L{stproxy.tap.Options} turns a command line (and the seed proxy's environment
variables) into a L{Config} with the parsers of L{stproxy.parse}, which say
what is wrong in one line; L{stproxy.assembly.assemble} is its only reader.
A program embedding stproxy may build a L{Config} itself: every field has the
command line's default, and the checks that need no file system run here too.

The value types a configuration is made of live with the code that uses them
(L{UpstreamAddress}, L{TrustedProxies}, L{ServerTLSFiles}); this module holds
only the settings that group them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from twisted.logger import LogLevel

from stproxy.auth.settings import AuthSettings, insecureListeners
from stproxy.edge.certificates import ServerTLSFiles
from stproxy.edge.endpoints import isSSLDescription
from stproxy.http.headers import TrustedProxies
from stproxy.routing.settings import ReplicaSettings, RouteSpec, RoutingError, checkRoutes
from stproxy.upstream.address import UpstreamAddress

#: Streamlit's own server.maxUploadSize (200 MiB) plus room for multipart framing.
DEFAULT_MAX_BODY_SIZE = 201 * 1024 * 1024

#: Streamlit's st.login splits its identity cookie into chunks that together
#: reach 5-22 KB, past twisted.web's own 16 KB; nginx's large buffers hold 32 KB.
DEFAULT_MAX_HEADER_SIZE = 64 * 1024

#: The smallest head limit that still lets a browser's ordinary request through.
MIN_MAX_HEADER_SIZE = 1024

#: C{--access-log off}: no line or event per request (nginx's C{access_log off}).
ACCESS_LOG_OFF = "off"
#: Where Streamlit answers whether it is up.
HEALTH_PATH = b"/_stcore/health"


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line naming the flag."""


@dataclass(frozen=True)
class Timeouts:
    """
    How long stproxy waits on the upstream, in seconds.

    @ivar connect: for the TCP (and TLS) connection to be established.
    @ivar response: from sending a request until the response headers arrive;
        also how long an exchange may move no bytes at all.
    """

    connect: float = 10.0
    response: float = 60.0

    def __post_init__(self) -> None:
        if not (self.connect > 0 and self.response > 0):
            raise ConfigError("timeouts must be positive")


@dataclass(frozen=True)
class WebSocketSettings:
    """
    How the proxy treats WebSocket connections.

    @ivar pingInterval: seconds between pings to the browser; 0 turns them off.
    @ivar pingTimeout: the browser connection is aborted when no pong (or any
        data frame) arrives this long after a ping; 0 waits for ever.
    @ivar compression: accept permessage-deflate from browsers that offer it.
        The upstream leg never compresses (it is loopback, usually).
    @ivar maxMessageSize: the largest message relayed, in bytes: from
        Streamlit to the browser, and a cap on L{maxBrowserMessageSize}; a
        bigger one closes that leg with 1009.  Streamlit's own
        C{server.maxMessageSize} is 200 MB.  0 for none (Autobahn's own
        meaning), written C{unlimited} on the command line, which refuses 0.
    @ivar maxBrowserMessageSize: the largest message a browser may send, in
        bytes, inflated (a bigger one, or one that inflates past it, closes
        the browser with 1009 before more than this much is inflated); 0 for
        none.  Streamlit's BackMsgs are small (rerun requests, widget states,
        component values; uploads go over HTTP) and Streamlit refuses client
        messages over its C{server.maxWidgetStateSize}, 25 MB, itself; what
        a browser may send is what one connection can make the proxy hold,
        and with permessage-deflate a few hundred kilobytes on the wire
        inflate to it.  L{maxMessageSize} still caps it (L{browserMessageLimit}).
    @ivar handshakeTimeout: how long a browser handshake may wait for the
        upstream's answer (connection included) before it is refused with 504.
        Autobahn's C{openHandshakeTimeout} on the browser leg is one second
        more, a backstop that only drops the connection.
    """

    pingInterval: float = 30.0
    pingTimeout: float = 30.0
    compression: bool = False
    maxMessageSize: int = 200 * 1024 * 1024
    handshakeTimeout: float = 30.0
    maxBrowserMessageSize: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("pingInterval", "pingTimeout", "maxMessageSize", "maxBrowserMessageSize"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.handshakeTimeout <= 0:
            raise ConfigError("handshakeTimeout must be positive")

    @property
    def browserMessageLimit(self) -> int:
        """The largest message taken from a browser: the smaller limit of the two (0: none)."""
        limits = [limit for limit in (self.maxMessageSize, self.maxBrowserMessageSize) if limit]
        return min(limits, default=0)


@dataclass(frozen=True)
class TLSSettings:
    """
    Everything TLS: the C{ssl:} listeners' files, certificate reload, the
    redirect listener, HSTS and how an C{https://} upstream is checked.

    @ivar listeners: the files each C{ssl:} listener serves, by its
        C{--listen} description.
    @ivar reloadInterval: seconds between checks of the files; 0 = SIGHUP only.
    @ivar redirect: the C{--redirect-http} listen description.
    @ivar redirectPort: the HTTPS port redirects name (C{--redirect-port}),
        when the TLS listener is published on another port than it binds
        (a container's 8443 published as 443); by default the listener's own.
    @ivar acmeWebroot: where ACME HTTP-01 challenges are served from on the
        redirect listener.
    @ivar hsts: C{Strict-Transport-Security} max-age for TLS responses.
    @ivar upstreamCA: trust only the CAs in this PEM for an C{https://} upstream.
    @ivar upstreamInsecure: connect to an C{https://} upstream whatever its
        certificate, logging every problem.
    """

    listeners: Mapping[str, ServerTLSFiles] = field(default_factory=dict)
    reloadInterval: float = 5.0
    redirect: str | None = None
    redirectPort: int | None = None
    acmeWebroot: str | None = None
    hsts: int | None = None
    upstreamCA: str | None = None
    upstreamInsecure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "listeners", MappingProxyType(dict(self.listeners)))
        if self.redirect is not None and not self.listeners:
            raise ConfigError("--redirect-http needs a TLS listener, such as --listen ssl:8443")


@dataclass(frozen=True)
class ClientLimits:
    """
    How long a client may take to send what it sends, and how many may be
    connected at once (L{stproxy.http.timeouts}, L{stproxy.edge.connections}).

    @ivar headerTimeout: seconds a request head may take from its first byte
        (from the connection's opening, for its first request); then 408.
        Also the window a request body's rate is measured over.
    @ivar idleTimeout: seconds a kept-alive connection may wait for the
        first byte of its next request before it is closed.
    @ivar minBodyRate: bytes per second a request body must average over
        each C{headerTimeout}-long window (then 408); 0 leaves only "some
        byte in every window".
    @ivar maxConnections: open client connections on every public listener
        together, WebSockets included (then 503); C{None} sizes it from the
        process's descriptor limit.
    """

    headerTimeout: float = 30.0
    idleTimeout: float = 75.0
    minBodyRate: int = 1024
    maxConnections: int | None = None

    def __post_init__(self) -> None:
        if not (self.headerTimeout > 0 and self.idleTimeout > 0):
            raise ConfigError("headerTimeout and idleTimeout must be positive")
        if self.minBodyRate < 0:
            raise ConfigError("minBodyRate must not be negative")
        if self.maxConnections is not None and self.maxConnections < 1:
            raise ConfigError("maxConnections must be at least 1")


@dataclass(frozen=True)
class OperationsSettings:
    """
    Shutdown, the admin listener and the health checks it reports.

    @ivar shutdownTimeout: seconds HTTP requests in flight get to finish on stop.
    @ivar admin: the endpoint description of the admin listener, if any.
    @ivar healthInterval: seconds between upstream health checks.
    @ivar healthPath: what a health check asks the upstream for.
    """

    shutdownTimeout: float = 30.0
    admin: str | None = None
    healthInterval: float = 5.0
    healthPath: bytes = HEALTH_PATH


@dataclass(frozen=True)
class LogSettings:
    """
    @ivar level: the lowest level of stproxy's own events that is emitted.
    @ivar format: C{"text"} or C{"json"} (one flat JSON object per line).
    @ivar accessLog: a combined-format access log file, C{"-"} for standard
        output, C{None} for the main log, L{ACCESS_LOG_OFF} for none at all.
    """

    level: LogLevel = LogLevel.info
    format: str = "text"
    accessLog: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("text", "json"):
            raise ConfigError(f"--log-format {self.format}: choose text or json")


@dataclass(frozen=True)
class Config:
    """
    One proxy, entirely.

    @ivar upstream: the Streamlit server everything is forwarded to, when
        L{routes} is empty; otherwise the first replica the routes name.
    @ivar routes: the apps and their replicas; by default the one app at
        C{/} on L{upstream}.
    @ivar replicas: how replicas are found, checked, drained and pinned.
    @ivar auth: who may use the apps, and how Streamlit is told who they are.
    @ivar listen: the endpoint descriptions to listen on (C{ssl:} ones are
        built by stproxy from L{TLSSettings.listeners}).
    @ivar maxBodySize: the largest request body accepted (then 413); 0 for
        none, written C{unlimited} on the command line, which refuses 0.
    @ivar trusted: the peers whose forwarding headers are appended to.
    @ivar maxHeaderSize: the largest request head (request line and headers,
        line endings included) accepted, WebSocket handshakes too (then 431,
        or 414 for a request line); never unlimited.
    @ivar clients: the timeouts and the connection cap clients get.
    """

    upstream: UpstreamAddress = UpstreamAddress("http", "localhost", 8501)
    listen: tuple[str, ...] = ("tcp:8500",)
    timeouts: Timeouts = Timeouts()
    maxBodySize: int = DEFAULT_MAX_BODY_SIZE
    trusted: TrustedProxies = TrustedProxies()
    websocket: WebSocketSettings = WebSocketSettings()
    tls: TLSSettings = TLSSettings()
    operations: OperationsSettings = OperationsSettings()
    logging: LogSettings = LogSettings()
    maxHeaderSize: int = DEFAULT_MAX_HEADER_SIZE
    clients: ClientLimits = ClientLimits()
    routes: tuple[RouteSpec, ...] = ()
    replicas: ReplicaSettings = ReplicaSettings()
    auth: AuthSettings = AuthSettings()

    def __post_init__(self) -> None:
        if not self.routes:
            object.__setattr__(self, "routes", (RouteSpec("/", (self.upstream,)),))
        else:
            first = self.routes[0]
            object.__setattr__(self, "upstream", (first.upstreams or first.discover)[0])
        try:
            checkRoutes(self.routes)
        except RoutingError as e:
            raise ConfigError(str(e)) from None
        if self.maxHeaderSize < MIN_MAX_HEADER_SIZE:
            raise ConfigError(f"--max-header-size must be at least {MIN_MAX_HEADER_SIZE} bytes")
        if not self.listen:
            raise ConfigError("give at least one --listen endpoint")
        if self.maxBodySize < 0:
            raise ConfigError("--max-body-size must not be negative")
        for description in self.tls.listeners:
            if description not in self.listen:
                raise ConfigError(f"TLS files given for {description}, which is not a listener")
        for description in self.listen:
            if isSSLDescription(description) and description not in self.tls.listeners:
                raise ConfigError(f"--listen {description}: no certificate for this listener")
        self._checkAuth()

    def _checkAuth(self) -> None:
        auth = self.auth
        insecure = insecureListeners(self.listen)
        if auth.checkers and insecure and not auth.allowInsecure:
            raise ConfigError(
                f"--auth on --listen {insecure[0]}: passwords would cross the network in clear;"
                " listen on ssl: or on loopback (interface=127.0.0.1), or add --allow-insecure-auth"
            )
        clientCAs = [files.clientCA for files in self.tls.listeners.values() if files.clientCA]
        if auth.userFromCert and not clientCAs:
            raise ConfigError("--user-from-cert needs client certificates: give --tls-client-ca")


__all__ = [
    "ClientLimits",
    "Config",
    "ConfigError",
    "LogSettings",
    "OperationsSettings",
    "TLSSettings",
    "Timeouts",
    "WebSocketSettings",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "MIN_MAX_HEADER_SIZE",
    "HEALTH_PATH",
]
