"""
Where Streamlit is, and the HTTP client that reaches it.

Both legs of the proxy share one L{Upstream}: the HTTP resource asks it for
responses, the WebSocket relay asks it for URLs and endpoints.  Nothing here
knows about browsers; it only knows how to talk to one upstream server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from stproxy._twisted import UpstreamConnectionPool, requestParsed
from stproxy.config import Timeouts
from stproxy.upstream.address import UpstreamAddress
from stproxy.upstream.resolution import ResolvedEndpoint, UpstreamAddresses
from stproxy.upstream.tls import handshakenTLSEndpoint

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IHostnameResolver,
        IOpenSSLClientConnectionCreator,
        IProtocol,
        IProtocolFactory,
        IPushProducer,
    )

    from stproxy.reactor import TCPReactor

#: uvicorn (under Streamlit) drops idle keep-alive connections after 5 s; ours
#: must go first, or a request can be written to a connection being closed.
IDLE_CONNECTION_TIMEOUT = 4.0

#: Idle connections to the upstream kept for the next request (Twisted's
#: C{maxPersistentPerHost}; its default of 2 is too few even for one page
#: loading its assets over six browser connections).  A request that finds no
#: idle connection opens one, and one returned to a full pool is closed; so
#: with 64 clients and 10 kept, 54 of every 64 requests paid a new TCP
#: connection (and uvicorn an accept), which capped small GETs at half the
#: rate reuse gives.  The pool holds only connections that served requests
#: at once in the last L{IDLE_CONNECTION_TIMEOUT} seconds: what it bounds is
#: what a burst leaves behind, a descriptor here and in uvicorn for 4 s each.
#: 128 covers 20 browsers loading a page at once (nginx suggests
#: C{keepalive 16}-C{32} per worker, Caddy keeps 32 per host, HAProxy all).
#: Not a cap on connections open at once: that is C{--max-connections}, as a
#: client connection holds at most one upstream connection at a time (its
#: requests are answered one after another; a WebSocket has one upstream
#: leg), so there are never more than the cap, plus these, plus the health
#: check's (L{stproxy.edge.descriptors} keeps descriptors apart for all).
POOLED_IDLE_CONNECTIONS = 128

#: The largest response head (status line and headers) read from the
#: upstream, in bytes; past it the response fails and the client gets a 502.
#: Streamlit's heads are under 1 KiB; nginx's default buffer for them is 4 or
#: 8 KiB ("upstream sent too big header").  Twisted's client has no limit.
MAX_RESPONSE_HEAD = 64 * 1024

#: The most response header fields taken from the upstream (then 502): the
#: limit twisted.web puts on a client's request (C{HTTPChannel.maxHeaders}).
MAX_RESPONSE_HEADERS = 500

#: The status codes a final response may have.  Twisted's client has read
#: past any 1xx already (an interim answer is not the response), so one that
#: reaches here, like C{0} or C{9999}, is not HTTP.
VALID_STATUS = range(200, 600)


class Upstream:
    """
    The upstream server together with the connections stproxy keeps to it.

    It owns a persistent L{HTTPConnectionPool}, and the upstream's addresses
    (L{stproxy.upstream.resolution}): both legs connect to an address looked
    up in advance, never to the name.  L{start} begins the periodic lookups;
    L{close} stops them and drops the pool, and the service hierarchy calls
    both.
    """

    def __init__(
        self,
        reactor: TCPReactor,
        address: UpstreamAddress,
        timeouts: Timeouts = Timeouts(),
        agent: IAgent | None = None,
        tlsPolicy: IPolicyForHTTPS | None = None,
        resolver: IHostnameResolver | None = None,
        logObserver: ILogObserver | None = None,
    ) -> None:
        """
        @param agent: the agent requests go through; by default an L{Agent}
            on this upstream's own pool.  Tests pass a fake here.
        @param tlsPolicy: how an C{https} upstream is verified, for both legs
            (L{stproxy.upstream.tls}); by default the platform's trust store
            and the host name, as a browser checks.
        @param resolver: where the upstream's name is looked up; by default
            the reactor's C{nameResolver} (C{getaddrinfo} in a thread).
        """
        self.reactor = reactor
        self.address = address
        self.logObserver = logObserver
        self.timeouts = timeouts
        self.tlsPolicy = tlsPolicy if tlsPolicy is not None else BrowserLikePolicyForHTTPS()
        if resolver is None:
            resolver = getattr(reactor, "nameResolver", None)
        self.addresses = UpstreamAddresses(
            reactor, address.host, address.port, resolver, logObserver=logObserver
        )
        self._pool = UpstreamConnectionPool(reactor, maxHeadSize=MAX_RESPONSE_HEAD)
        self._pool.maxPersistentPerHost = POOLED_IDLE_CONNECTIONS
        # Twisted infers int from its default (240); the pool passes it to callLater.
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT  # type: ignore[assignment]
        self._endpoints = _PoolEndpoints(self)
        self._base = URI.fromBytes(address.httpURL(b"/"))  # each target is sent on it
        self._ownAgent: Agent | None = None
        if agent is None:
            self._ownAgent = Agent.usingEndpointFactory(reactor, self._endpoints, pool=self._pool)
            agent = self._ownAgent
        self._agent = agent

    def start(self) -> None:
        """Look the upstream's name up now and then every so often (L{UpstreamAddresses.start})."""
        self.addresses.start()

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
        arrive in time; the failure is then L{ResponseTimeout}.  A response
        that is not one a browser may be given (L{checkedResponse}) fails with
        L{InvalidResponse}.
        """
        # maybeDeferred: Agent raises some errors (a URI it refuses) at once.
        d = maybeDeferred(self._send, method, target, headers, body)
        d.addCallback(checkedResponse)
        timedOut: list[bool] = []

        def onTimeout() -> None:
            timedOut.append(True)
            d.cancel()

        call = self.reactor.callLater(self.timeouts.response, onTimeout)

        def done(result: object) -> object:
            if call.active():
                call.cancel()
            if timedOut and isinstance(result, Failure):
                return Failure(ResponseTimeout(self.timeouts.response))
            return result

        return d.addBoth(done)

    def _send(
        self, method: bytes, target: bytes, headers: Headers, body: IBodyProducer | None
    ) -> Deferred[IResponse]:
        """C{target} to the agent; to stproxy's own, on the URL parsed once."""
        if self._ownAgent is None:
            return self._agent.request(method, self.address.httpURL(target), headers, body)
        base = self._base
        uri = URI(base.scheme, base.netloc, base.host, base.port, target, b"", b"", b"")
        return requestParsed(self._ownAgent, self._endpoints, method, uri, headers, body)

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint for one new connection to the upstream (the
        WebSocket leg): over TLS, verified by the same policy as the HTTP leg,
        for an C{https} upstream.
        """
        endpoint = self.tcpEndpoint()
        if self.address.isTLS:
            endpoint = handshakenTLSEndpoint(self.tlsCreator(), endpoint)
        return endpoint

    def tcpEndpoint(self) -> IStreamClientEndpoint:
        """A plain TCP endpoint to the upstream's looked-up address."""
        return ResolvedEndpoint(self.reactor, self.addresses, self.timeouts.connect)

    def tlsCreator(self) -> IOpenSSLClientConnectionCreator:
        """
        What checks an C{https} upstream: for the host I{name} (SNI, and the
        certificate's names), though the connection goes to an address.
        """
        host = self.address.host.encode("idna")
        creator: IOpenSSLClientConnectionCreator = self.tlsPolicy.creatorForNetloc(
            host, self.address.port
        )
        return creator

    def close(self) -> Deferred[None]:
        """Stop the lookups and drop every idle pooled connection; fires when they are closed."""
        self.addresses.stop()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


@implementer(IAgentEndpointFactory, IStreamClientEndpoint)
class _PoolEndpoints:
    """
    How the pool's L{Agent} opens a connection: to the looked-up address,
    over TLS for an C{https} upstream, as L{Agent}'s own factory would with
    a L{HostnameEndpoint} (without the handshake wait of the WebSocket leg:
    the HTTP client writes the request into the TLS layer at once).

    The L{Agent} asks for an endpoint on every request, a pooled connection
    or not, so this one endpoint serves them all and only C{connect} (a new
    connection) does any work, the TLS policy's included.
    """

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return self

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        endpoint = self._upstream.tcpEndpoint()
        if self._upstream.address.isTLS:
            endpoint = wrapClientTLS(self._upstream.tlsCreator(), endpoint)
        connected: Deferred[IProtocol] = endpoint.connect(protocolFactory)
        return connected


def checkedResponse(response: IResponse) -> IResponse:
    """
    C{response} if its status and number of header fields are those of an
    HTTP response; otherwise its connection is closed (nothing more is read
    from it) and L{InvalidResponse} says why.
    """
    problem = None
    if response.code not in VALID_STATUS:
        problem = f"status {response.code} is not a final HTTP status"
    else:
        fields = sum(len(values) for _, values in response.headers.getAllRawHeaders())
        if fields > MAX_RESPONSE_HEADERS:
            problem = f"{fields} header fields, over {MAX_RESPONSE_HEADERS}"
    if problem is None:
        return response
    discardResponse(response)
    raise InvalidResponse(problem)


def discardResponse(response: IResponse) -> None:
    """Read nothing more of C{response}: its connection is closed, not pooled."""
    discard = _Discard()
    response.deliverBody(discard)
    if discard.transport is not None:  # stopping the body closes its connection
        discard.transport.stopProducing()


class _Discard(Protocol):
    """Takes a response body only to get hold of the connection it comes over."""

    # What Twisted delivers a body through (Protocol says ITransport).
    transport: IPushProducer | None  # type: ignore[assignment]


class InvalidResponse(Exception):
    """The upstream answered with something a browser must not be given."""


class ResponseTimeout(Exception):
    """The upstream accepted the request but sent no response headers in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no response within {seconds:g} s")
        self.seconds = seconds


__all__ = [
    "POOLED_IDLE_CONNECTIONS",
    "MAX_RESPONSE_HEAD",
    "MAX_RESPONSE_HEADERS",
    "InvalidResponse",
    "ResponseTimeout",
    "Upstream",
    "checkedResponse",
    "discardResponse",
]
