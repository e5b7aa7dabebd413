"""
Listening services that say where they listen, and stop start-up when they
cannot.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver
from zope.interface import implementer

from stproxy._twisted import raiseBindErrorsAtStart
from stproxy.ops.logs import loggerFor


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
        message: str = "stproxy listening on {where} ({description})",
    ) -> None:
        """@param message: the announcement's log template (fields C{where}, C{description})."""
        self._endpoint = endpoint
        self._log = loggerFor(self, logObserver)
        self._message = message
        self.description = description
        self.port: IListeningPort | None = None

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            address = port.getHost()
            where = (
                f"{address.host}:{address.port}"
                if hasattr(address, "host") and hasattr(address, "port")
                else str(getattr(address, "name", address))
            )
            self._log.info(self._message, where=where, description=self.description)
            return port

        return self._endpoint.listen(factory).addCallback(listening)


def listeningService(
    endpoint: IStreamServerEndpoint, factory: IProtocolFactory, name: str
) -> StreamServerEndpointService:
    """
    A service listening on C{endpoint} whose bind failure is raised from
    C{privilegedStartService} at once, as C{twisted.application.strports.service}
    arranges, so a busy port stops start-up instead of being logged while the
    process runs on without a listener.
    """
    service = StreamServerEndpointService(endpoint, factory)
    raiseBindErrorsAtStart(service)
    service.setName(name)
    return service


__all__ = ["AnnouncedEndpoint", "listeningService"]
