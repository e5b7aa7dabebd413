"""
The service hierarchy of one proxy: its listeners and its upstream.

L{ProxyService} is an ordinary L{MultiService}, so any Twisted application can
embed it; starting it binds every listener, stopping it stops accepting,
then closes the upstream connection pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import ILogObserver
from zope.interface import implementer

from stproxy.http import ReverseProxyResource
from stproxy.logs import loggerFor, publisherAt
from stproxy.site import buildSite
from stproxy.upstream import Upstream
from stproxy.websocket import webSocketResource

if TYPE_CHECKING:
    from stproxy.tap import Options


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    A server endpoint that logs where it listens once it does, and
    remembers the port, so operators (and tests) learn the real address
    of a C{tcp:0} listener.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        description: str,
        logObserver: ILogObserver | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._log = loggerFor(self, logObserver)
        self.description = description
        self.port: IListeningPort | None = None

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            address = port.getHost()
            where = (
                f"{address.host}:{address.port}"
                if hasattr(address, "port")
                else str(getattr(address, "name", address))
            )
            self._log.info(
                "stproxy listening on {where} ({description})",
                where=where,
                description=self.description,
            )
            return port

        return self._endpoint.listen(factory).addCallback(listening)


class _UpstreamService(Service):
    """Owns the upstream's connection pool: closes it when the proxy stops."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.upstream.close()


class ProxyService(MultiService):
    """
    One stproxy: a listener per endpoint, all serving one L{ProxySite}, and
    the upstream they forward to.

    Children stop in reverse order of addition, so listeners stop accepting
    before the upstream pool is closed.
    """

    def __init__(
        self,
        upstream: Upstream,
        site: Any,
        endpoints: list[AnnouncedEndpoint],
        logObserver: ILogObserver | None = None,
    ) -> None:
        super().__init__()
        self._log = loggerFor(self, logObserver)
        self.upstream = upstream
        self.site = site
        self.endpoints = endpoints
        _UpstreamService(upstream).setServiceParent(self)
        for number, endpoint in enumerate(endpoints):
            listener = StreamServerEndpointService(endpoint, site)
            listener._raiseSynchronously = True
            listener.setName(f"listener-{number}")
            listener.setServiceParent(self)

    @classmethod
    def fromOptions(cls, options: Options, reactor: Any) -> ProxyService:
        """Wire a proxy from parsed L{Options}; nothing is started or bound."""
        log = publisherAt(options["log-level"])
        upstream = Upstream(reactor, options["upstream"], options["timeouts"])
        trusted = options["trust-forwarded"]
        site = buildSite(
            http=ReverseProxyResource(upstream, trusted, log),
            webSocket=webSocketResource(upstream, options["websocket"], trusted, log),
            reactor=reactor,
            maxBodySize=options["max-body-size"],
            accessLog=options["access-log"],
            logObserver=log,
        )
        endpoints = [
            AnnouncedEndpoint(serverFromString(reactor, description), description, log)
            for description in options["listen"]
        ]
        return cls(upstream, site, endpoints, log)

    def startService(self) -> None:
        super().startService()
        self._log.info("stproxy forwarding to {upstream}", upstream=str(self.upstream.address))

    @property
    def ports(self) -> list[IListeningPort]:
        """The ports listened on, once started."""
        return [e.port for e in self.endpoints if e.port is not None]


__all__ = ["ProxyService", "AnnouncedEndpoint"]
