"""
Where Streamlit is, and the HTTP client that reaches it.

Both legs of the proxy share one L{Upstream}: the HTTP resource asks it for
responses, the WebSocket relay asks it for URLs and endpoints.  Nothing here
knows about browsers; it only knows how to talk to one upstream server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse

from stproxy.upstreamtls import handshakenTLSEndpoint

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTCP, IStreamClientEndpoint

DEFAULT_PORTS = {"http": 80, "https": 443}

#: uvicorn (under Streamlit) drops idle keep-alive connections after 5 s; ours
#: must go first, or a request can be written to a connection being closed.
IDLE_CONNECTION_TIMEOUT = 4.0


@dataclass(frozen=True)
class UpstreamAddress:
    """
    The scheme, host and port of the one server stproxy forwards to.

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: a host name or IP address (IPv6 without brackets).
    @ivar port: the TCP port.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> UpstreamAddress:
        """
        Parse C{host:port}, C{http://host:port} or C{https://host:port}.

        @raise ValueError: with a message fit for a usage error.
        """
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"invalid upstream {text!r}: {e}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"invalid upstream {text!r}: scheme must be http or https, not {parts.scheme!r}"
            )
        if not parts.hostname:
            raise ValueError(f"invalid upstream {text!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"invalid upstream {text!r}: give only scheme, host and port"
                " (paths are forwarded as the browser sends them)"
            )
        if port == 0:
            raise ValueError(f"invalid upstream {text!r}: port must be 1-65535")
        return cls(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])

    @property
    def isTLS(self) -> bool:
        return self.scheme == "https"

    @property
    def netloc(self) -> str:
        """C{host:port}, with IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def httpURL(self, target: bytes) -> bytes:
        """The absolute URL of an origin-form request target on the upstream."""
        return f"{self.scheme}://{self.netloc}".encode("ascii") + target

    def webSocketURL(self, target: str) -> str:
        """The C{ws://} or C{wss://} URL of an origin-form target on the upstream."""
        scheme = "wss" if self.isTLS else "ws"
        return f"{scheme}://{self.netloc}{target}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


@dataclass(frozen=True)
class Timeouts:
    """
    How long stproxy waits on the upstream, in seconds.

    @ivar connect: for the TCP (and TLS) connection to be established.
    @ivar response: from sending a request until the response headers arrive.
    """

    connect: float = 10.0
    response: float = 60.0


class Upstream:
    """
    The upstream server together with the connections stproxy keeps to it.

    It owns a persistent L{HTTPConnectionPool}; L{close} drops it, and the
    service hierarchy calls that on shutdown.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        address: UpstreamAddress,
        timeouts: Timeouts = Timeouts(),
        agent: IAgent | None = None,
        tlsPolicy: IPolicyForHTTPS | None = None,
    ) -> None:
        """
        @param agent: the agent requests go through; by default an L{Agent}
            on this upstream's own pool.  Tests pass a fake here.
        @param tlsPolicy: how an C{https} upstream is verified, for both legs
            (L{stproxy.upstreamtls}); by default the platform's trust store
            and the host name, as a browser checks.
        """
        self.reactor = reactor
        self.address = address
        self.timeouts = timeouts
        self.tlsPolicy = tlsPolicy if tlsPolicy is not None else BrowserLikePolicyForHTTPS()
        self._pool = _QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 10
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT
        if agent is None:
            agent = Agent(
                reactor,
                contextFactory=self.tlsPolicy,
                connectTimeout=timeouts.connect,
                pool=self._pool,
            )
        self._agent = agent

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: IBodyProducer | None,
    ) -> Deferred[IResponse]:
        """
        Send one request upstream and fire with the response once its headers
        have arrived; the body is left for the caller to stream.

        This goes to the L{Agent} that C{treq.HTTPClient} would wrap, not
        through C{HTTPClient.request}: that method always adds a cookie jar
        (which would hand one user's cookies to the next) and a gzip decoder
        (which appends its own C{Accept-Encoding}, inflates the body and drops
        C{Content-Encoding} and C{Content-Length}), and a proxy must pass all of
        those through untouched.  Everything else treq layers on (redirects,
        buffering) is exactly what a proxy must not do either.

        The response timeout cancels the request if no response headers
        arrive in time; the failure is then L{ResponseTimeout}.
        """
        # maybeDeferred: Agent raises some errors (a URI it refuses) at once.
        d = maybeDeferred(self._agent.request, method, self.address.httpURL(target), headers, body)
        timedOut: list[bool] = []

        def onTimeout() -> None:
            timedOut.append(True)
            d.cancel()

        call = self.reactor.callLater(self.timeouts.response, onTimeout)  # type: ignore[attr-defined]

        def done(result: object) -> object:
            if call.active():
                call.cancel()
            if timedOut and isinstance(result, Failure):
                return Failure(ResponseTimeout(self.timeouts.response))
            return result

        return d.addBoth(done)

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint for one new connection to the upstream (the
        WebSocket leg): over TLS, verified by the same policy as the HTTP leg,
        for an C{https} upstream.
        """
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, self.address.host, self.address.port, timeout=self.timeouts.connect
        )
        if self.address.isTLS:
            host = self.address.host.encode("idna")
            creator = self.tlsPolicy.creatorForNetloc(host, self.address.port)
            endpoint = handshakenTLSEndpoint(creator, endpoint)
        return endpoint

    def close(self) -> Deferred[None]:
        """Drop every idle pooled connection; fires when they are closed."""
        return self._pool.closeCachedConnections()


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


class _QuietPool(HTTPConnectionPool):
    """A pool that does not log "Starting factory" for every new upstream connection."""

    _factory = _QuietFactory


class ResponseTimeout(Exception):
    """The upstream accepted the request but sent no response headers in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no response within {seconds:g} s")
        self.seconds = seconds


__all__ = ["Upstream", "UpstreamAddress", "Timeouts", "ResponseTimeout"]
