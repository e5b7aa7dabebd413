"""
C{StreamlitProxy}: the proxy for Python programs, with the seed proxy's
interface (C{await start(host, port)}, C{await close()}) for asyncio code and
C{.service} for Twisted applications.

asyncio programs get Twisted's asyncio reactor on their own running loop
(installed on first use, see C{TWISTED.md} section 11), so the proxy shares
the loop with the rest of the program.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from functools import partial
from typing import TYPE_CHECKING, Sequence

from twisted.application.service import IService
from twisted.internet.defer import Deferred, maybeDeferred

from stproxy.tap import Options, makeService

if TYPE_CHECKING:
    from stproxy.reactor import ProxyReactor


def asyncioReactor(loop: asyncio.AbstractEventLoop) -> ProxyReactor:
    """
    The Twisted reactor running on C{loop}, installed and started on first use.

    @raise RuntimeError: if another kind of reactor is already installed in
        this process.
    """
    from twisted.internet.error import ReactorAlreadyRunning

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise RuntimeError(
            f"a {type(reactor).__name__} is already installed; StreamlitProxy.start() needs"
            " Twisted's asyncio reactor (use StreamlitProxy.service under other reactors)"
        )
    try:
        reactor.startRunning(installSignalHandlers=False)
    except ReactorAlreadyRunning:
        pass
    else:
        # The reactor never sees a "shutdown" event here (stopping it would
        # stop the asyncio loop under asyncio.run), so its thread pool, used
        # for name lookups, is never stopped: daemon threads let the program
        # exit when its loop is done.  (Twisted types threadFactory as
        # type[Thread], from its default; the pool only calls it.)
        reactor.getThreadPool().threadFactory = partial(  # type: ignore[assignment]
            threading.Thread, daemon=True
        )
    return reactor


class StreamlitProxy:
    """
    A reverse proxy (HTTP and WebSocket) in front of one Streamlit server.

    @param streamlit_host: the Streamlit server's host.
    @param streamlit_port: the Streamlit server's port.
    @param arguments: any further command-line options of C{twistd stproxy}
        (e.g. C{["--access-log", "-", "--upstream-timeout", "30"]}).
    """

    def __init__(
        self,
        streamlit_host: str = "localhost",
        streamlit_port: int = 8501,
        arguments: Sequence[str] = (),
    ) -> None:
        self.streamlit_host = streamlit_host
        self.streamlit_port = streamlit_port
        self._arguments = list(arguments)
        self._service: IService | None = None
        self._serving: asyncio.Future[None] | None = None
        self._listening: asyncio.Future[list[tuple[str, int]]] | None = None

    def options(self, host: str = "0.0.0.0", port: int = 8500) -> Options:
        """
        The parsed options for a proxy listening on C{host}:C{port}.

        @raise twisted.python.usage.UsageError: for invalid values.
        """
        options = Options(environ={})
        options.exitOnError = False
        options.parseOptions(
            [
                "--streamlit-host",
                self.streamlit_host,
                "--streamlit-port",
                str(self.streamlit_port),
                "--proxy-host",
                host,
                "--proxy-port",
                str(port),
                *self._arguments,
            ]
        )
        return options

    @property
    def service(self) -> IService:
        """
        The proxy as a Twisted service on the global reactor, listening on
        C{0.0.0.0:8500}; give it a parent in your application.
        """
        if self._service is None:
            self._service = makeService(self.options())
        return self._service

    async def start(self, host: str = "0.0.0.0", port: int = 8500) -> None:
        """
        Listen on C{host}:C{port} and serve until L{close} is called (or the
        calling task is cancelled), as the seed proxy's C{start} did.

        @raise twisted.python.usage.UsageError: for invalid arguments.
        @raise twisted.internet.error.CannotListenError: if a port is taken;
            every listener already bound is closed first, and the upstream
            pool too, so the program may try again.
        """
        loop = asyncio.get_running_loop()
        listening = self._listeningFuture()
        self._serving = loop.create_future()
        service: IService | None = None
        try:
            reactor = asyncioReactor(loop)
            service = self._service = makeService(self.options(host, port), reactor)
            service.startService()
        except BaseException as e:
            if service is not None:
                # The proxy stops what it had started (ProxyService); its
                # ports are only free once that stop has fired.
                self._service = None
                await Deferred.asFuture(maybeDeferred(service.stopService), loop)
            if not listening.done():
                listening.set_exception(e)
                listening.exception()  # retrieved: start() raises it too
            raise
        listening.set_result(self.addresses)
        await self._serving

    def _listeningFuture(self) -> asyncio.Future[list[tuple[str, int]]]:
        """The future L{wait_listening} waits on, shared with L{start} whichever comes first."""
        if self._listening is None:
            self._listening = asyncio.get_running_loop().create_future()
        return self._listening

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the started proxy listens, as (host, port) pairs."""
        ports = getattr(self._service, "ports", [])
        return [(p.getHost().host, p.getHost().port) for p in ports]

    async def wait_listening(self) -> list[tuple[str, int]]:
        """
        Wait until L{start} has bound its listeners, and return L{addresses};
        raises what L{start} raised if it failed.
        """
        return await asyncio.shield(self._listeningFuture())

    async def close(self) -> None:
        """Stop listening, close the upstream connections, end L{start}."""
        service, self._service = self._service, None
        if service is not None and service.running:
            await Deferred.asFuture(maybeDeferred(service.stopService), asyncio.get_running_loop())
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)


__all__ = ["StreamlitProxy"]
