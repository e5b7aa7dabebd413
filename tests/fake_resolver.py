"""
A name resolver the test answers itself (L{FakeResolver}): Twisted's memory reactors have none,
and a real one would ask the machine's DNS.  Used by the tests under ``tests/upstream/``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer

__all__ = ["FakeResolver"]


@implementer(IHostnameResolver)
class FakeResolver:
    """Records each lookup; the test answers it with L{answer}."""

    def __init__(self) -> None:
        self.lookups: list[tuple[IResolutionReceiver, str, int]] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        self.lookups.append((resolutionReceiver, hostName, portNumber))
        return None

    def answer(self, *hosts: str) -> None:
        """The oldest pending lookup finds C{hosts} (none: the name does not resolve)."""
        receiver, _, port = self.lookups.pop(0)
        for host in hosts:
            receiver.addressResolved(
                IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
            )
        receiver.resolutionComplete()
