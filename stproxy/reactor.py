"""
The types of the reactor a proxy runs on, for annotations, and the global
reactor as one.

Some parts of a proxy need more of the reactor than any one Twisted
interface says, and Python has no "provides both" type.  So:

  - a part that needs one interface asks for that one (L{IReactorTime} for
    a timer, say);
  - the upstream client (L{stproxy.upstream.client.Upstream}) needs timers
    and TCP connections: a L{TCPReactor};
  - the whole proxy (L{stproxy.assembly.assemble}) also needs TLS for its
    C{ssl:} listeners and calls from a signal handler (certificate reload on
    SIGHUP): a L{ProxyReactor}.

Both are typing Protocols: any object with their methods is one (Twisted's
asyncio reactor is a L{ProxyReactor}, a C{MemoryReactorClock} a
L{TCPReactor}; L{globalReactor} gives the global one as a L{ProxyReactor}),
and each can be passed wherever Twisted asks for one of its interfaces.
Endpoint descriptions may need yet more (C{unix:} needs C{IReactorUNIX}):
Twisted checks those when it listens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, cast

from twisted.internet.interfaces import (
    IReactorFromThreads,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
)
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IConnector,
        IDelayedCall,
        IListeningPort,
        IOpenSSLContextFactory,
    )
    from twisted.internet.protocol import ClientFactory, ServerFactory
    from twisted.internet.ssl import ClientContextFactory


# Each @implementer makes mypy-zope check the methods below against those
# interfaces and treat the Protocol as a provider of them (as Twisted's own
# typing Protocols in twisted.internet.protocol do); nothing is ever an
# instance of these classes.  The signatures are the interfaces' own, with
# Any for their protocol factories' type variable.


@implementer(IReactorTime, IReactorTCP)
class TCPReactor(Protocol):
    """A reactor with timers and TCP; see the module docstring."""

    # IReactorTime
    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> IDelayedCall: ...

    def getDelayedCalls(self) -> Sequence[IDelayedCall]: ...

    # IReactorTCP
    def listenTCP(
        self, port: int, factory: ServerFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort: ...

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: ClientFactory[Any],
        timeout: float = 30.0,
        bindAddress: tuple[str, int] | None = None,
    ) -> IConnector: ...


@implementer(IReactorSSL, IReactorFromThreads)
class ProxyReactor(TCPReactor, Protocol):
    """A L{TCPReactor} with TLS and calls from threads; see the module docstring."""

    # IReactorSSL
    def listenSSL(
        self,
        port: int,
        factory: ServerFactory[Any],
        contextFactory: IOpenSSLContextFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort: ...

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: ClientFactory[Any],
        contextFactory: ClientContextFactory,
        timeout: float,
        bindAddress: tuple[str, int] | None,
    ) -> IConnector: ...

    # IReactorFromThreads (some of Twisted's reactor classes call the first
    # argument f, so mypy does not take them for a ProxyReactor: see
    # globalReactor)
    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None: ...


def globalReactor() -> ProxyReactor:
    """
    Twisted's global reactor (installing the default one if none is yet).

    Twisted annotates it with its common interfaces only, which leave out
    L{IReactorSSL} and L{IReactorFromThreads}; every reactor it installs
    provides both.
    """
    from twisted.internet import reactor

    return cast(ProxyReactor, reactor)


__all__ = ["ProxyReactor", "TCPReactor", "globalReactor"]
