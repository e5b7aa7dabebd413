"""
The root of stproxy's resource tree: upgrade or not, whatever the path.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request


def isWebSocketUpgrade(request: IRequest) -> bool:
    """Whether C{request} asks to switch to the WebSocket protocol (RFC 6455 section 4.1)."""
    upgrade = request.getHeader(b"upgrade") or b""
    tokens = {token.strip().lower() for token in upgrade.split(b",")}
    return b"websocket" in tokens


class ProxyRoot(Resource):
    """
    Sends WebSocket upgrades to the relay and everything else to the HTTP
    reverse proxy, whatever the path.

    Autobahn's resource is a leaf that takes over every request under its
    path, upgrade or not, so it is only ever asked to render upgrades.
    """

    isLeaf = True

    def __init__(self, http: IResource, webSocket: IResource) -> None:
        super().__init__()
        self._http = http
        self._webSocket = webSocket

    def render(self, request: Request) -> object:
        if isWebSocketUpgrade(request) and request.uri.startswith(b"/"):
            result = self._webSocket.render(request)
            if request.channel.transport is None:
                # The connection now belongs to the relay.  (Site.buildProtocol
                # sets the channel's site; HTTPChannel does not declare it.)
                request.channel.site.handedOver(request)  # type: ignore[attr-defined]
            return result
        return self._http.render(request)


__all__ = ["ProxyRoot", "isWebSocketUpgrade"]
