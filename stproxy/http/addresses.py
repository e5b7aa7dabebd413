"""
What a connection is, asked of it once.

twisted.web asks the channel for its local address when it builds each
request (C{Request.__init__} calls C{getHost}, a C{getsockname} system call)
and whether it is secure several times per request (an interface adaptation
each).  Neither changes while the connection is open (a TLS listener's
connections are TLS from their first byte), so a channel remembers both.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress


class RememberedAddresses:
    """
    Mixed into an L{HTTPChannel} before it: C{getHost} and C{isSecure} are
    asked of the transport once per connection, not once per request.
    """

    _host: IAddress | None = None
    _secure: bool | None = None

    def getHost(self) -> IAddress:
        """The connection's local address, from the first asking."""
        if self._host is None:
            self._host = super().getHost()  # type: ignore[misc]
        return self._host

    def isSecure(self) -> bool:
        """Whether the connection is over TLS, from the first asking."""
        if self._secure is None:
            secure: Any = super().isSecure()  # type: ignore[misc]
            self._secure = bool(secure)
        return self._secure


__all__ = ["RememberedAddresses"]
