"""
The command line, and C{makeService}: what the twistd plugin calls.

L{Options} parses the flags (and the seed proxy's environment variables) into
L{Options.config}, a L{stproxy.config.Config}; L{makeService} hands that to
L{stproxy.assembly.assemble}, the one place a proxy is wired.  The twistd
plugin, C{python -m stproxy} and L{stproxy.api.StreamlitProxy} all go
through here.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, NoReturn, Sequence

from twisted.application.service import IService
from twisted.python import usage

from stproxy import parse, parseauth, parseroutes
from stproxy.assembly import assemble
from stproxy.config import Config, ConfigError, Timeouts
from stproxy.parsetls import TLSFlags, tlsSettings
from stproxy.reactor import ProxyReactor, globalReactor
from stproxy.workers.assembly import supervise
from stproxy.workers.flags import WorkerFlags


class Options(parseroutes.RoutingFlags, parseauth.AuthFlags, WorkerFlags, usage.Options):
    """
    The options shared by C{twistd stproxy} and C{python -m stproxy}.

    The seed proxy's flags (C{--streamlit-host} and friends) and environment
    variables are accepted as another way to say C{--upstream} and
    C{--listen}; a command line that says both ways is refused rather than
    guessed at.  Flags win over the environment.
    """

    synopsis = "[options]"
    longdesc = (
        "Reverse proxy and TLS edge for a Streamlit app: forwards HTTP and the "
        "/_stcore/stream WebSocket to the upstream Streamlit server."
    )

    optParameters = [
        ["log-level", None, "INFO", "DEBUG, INFO, WARNING or ERROR"],
        [
            "access-log",
            None,
            None,
            "Write a combined-format access log to PATH ('-' = stdout, 'off' = none)",
        ],
        ["connect-timeout", None, "10", "Seconds to wait for a connection to the upstream"],
        [
            "upstream-timeout",
            None,
            "60",
            "Seconds to wait for the upstream's response headers (then 504)",
        ],
        [
            "max-body-size",
            None,
            "201M",
            "Largest request body accepted (then 413); K/M/G suffixes allowed, or unlimited",
        ],
        [
            "max-header-size",
            None,
            "64K",
            "Largest request head, request line and headers (then 431; 414 for the line alone)",
        ],
        # Slow clients and the connection cap (stproxy.http.timeouts, stproxy.edge.connections).
        ["header-timeout", None, "30", "Seconds a request head may take (then 408)"],
        ["idle-timeout", None, "75", "Seconds a kept-alive connection may wait for a request"],
        ["min-body-rate", None, "1K", "Slowest request body in bytes/s (then 408); 0 = any"],
        ["max-connections", None, None, "Most connections, 503 past it [default: from ulimit -n]"],
        ["ws-ping-interval", None, "30", "Seconds between WebSocket pings to the browser; 0 = off"],
        ["ws-ping-timeout", None, "30", "Seconds to wait for a pong before dropping the browser"],
        ["ws-compression", None, "off", "permessage-deflate towards the browser: on or off"],
        [
            "ws-max-message-size",
            None,
            "200M",
            "Largest WebSocket message relayed (Streamlit's server.maxMessageSize);"
            " K/M/G suffixes allowed, or unlimited",
        ],
        [
            "ws-max-browser-message-size",
            None,
            "8M",
            "Largest WebSocket message a browser may send, once inflated (then 1009);"
            " at most --ws-max-message-size; K/M/G suffixes allowed, or unlimited",
        ],
        ["streamlit-host", None, None, "Seed-compatible: upstream host [$STREAMLIT_HOST]"],
        ["streamlit-port", None, None, "Seed-compatible: upstream port [$STREAMLIT_PORT]"],
        ["proxy-host", None, None, "Seed-compatible: address to listen on [$PROXY_HOST]"],
        ["proxy-port", None, None, "Seed-compatible: port to listen on [$PROXY_PORT]"],
        # Operations (stproxy.ops.admin, stproxy.ops.drain, stproxy.ops.health): see the README, "Operations".
        [
            "shutdown-timeout",
            None,
            "30",
            "Seconds in-flight HTTP requests get to finish on SIGTERM/SIGINT before they are aborted",
        ],
        [
            "admin",
            None,
            None,
            "Serve /metrics, /healthz and /readyz on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 [default: off]",
        ],
        [
            "health-interval",
            None,
            "5",
            "Seconds between upstream /_stcore/health checks for /readyz",
        ],
        [
            "health-path",
            None,
            "/_stcore/health",
            "The upstream path /readyz checks; with server.baseUrlPath=app, /app/_stcore/health",
        ],
        ["log-format", None, "text", "text or json (stproxy's own events as JSON lines on stdout)"],
        # TLS edge (stproxy.edge, stproxy.parsetls): ssl: listeners, redirect, HSTS, upstream TLS.
        ["tls-cert", None, None, "Certificate PEM (full chain) for ssl: listeners naming none"],
        ["tls-key", None, None, "Private key PEM for ssl: listeners naming none"],
        ["tls-ca", None, None, "More chain certificates (PEM) sent after the certificate"],
        ["tls-client-ca", None, None, "Require client certificates issued by a CA in this PEM"],
        ["tls-min-version", None, "1.2", "Lowest TLS version accepted: 1.2 or 1.3"],
        [
            "tls-reload-interval",
            None,
            "5",
            "Seconds between checks of the certificate files for changes (0 = on SIGHUP only)",
        ],
        ["redirect-http", None, None, "Also listen here (e.g. tcp:80) redirecting all to HTTPS"],
        [
            "redirect-port",
            None,
            None,
            "HTTPS port named in redirects, when the TLS listener is published"
            " on another port than it binds [default: the listener's own]",
        ],
        ["acme-webroot", None, None, "Serve ACME HTTP-01 challenges from DIR on --redirect-http"],
        ["hsts", None, None, "Send Strict-Transport-Security: max-age=SECONDS over TLS"],
        ["upstream-ca", None, None, "Trust only the CAs in this PEM for an https:// upstream"],
    ]

    optFlags = [
        [
            "upstream-insecure",
            None,
            "Connect to an https:// upstream even if its certificate fails checks (logged)",
        ],
    ]

    #: The parsed configuration, once L{parseOptions} has succeeded.
    config: Config

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self["listen"] = []
        self["trust-forwarded"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on a Twisted server endpoint description, e.g. tcp:8500,
        tcp:8500:interface=127.0.0.1, unix:/run/stproxy.sock, or TLS with
        ssl:8443 (see --tls-cert and the README, "TLS"); repeatable [default: tcp:8500]
        """
        self["listen"].append(description)

    def opt_trust_forwarded(self, network: str) -> None:
        """
        Peer address or CIDR network of a proxy in front of stproxy whose
        X-Forwarded-*/Forwarded headers are appended to rather than replaced;
        repeatable
        """
        self["trust-forwarded"].append(network)

    #: On bad input, print one line and exit with status 2 (as argparse
    #: does) instead of twistd's page of usage and status 1.  Programs that
    #: want the L{usage.UsageError} instead set this to C{False}.
    exitOnError = True

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if not self.exitOnError:
                raise
            self._fail(str(e))

    def _fail(self, message: str) -> NoReturn:
        sys.stderr.write(f"stproxy: error: {message} (see --help)\n")
        raise SystemExit(2)

    def postOptions(self) -> None:
        try:
            self.config = self._config()
            self.processes = self.workerSettings()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["print-streamlit-config"]:
            parseauth.printStreamlitConfig(self.config.auth)
            raise SystemExit(0)

    def _config(self) -> Config:
        """Every flag through its parser (L{stproxy.parse}) into one L{Config}."""
        routes = parseroutes.routeSpecs(
            self.get("upstream", []),
            self.get("upstream-dns", []),
            self.get("route", []),
            self["streamlit-host"],
            self["streamlit-port"],
            self.environ,
        )
        replicas = [a for route in routes for a in route.upstreams + route.discover]
        upstream = next((a for a in replicas if a.isTLS), replicas[0])
        listen = parse.listeners(
            self["listen"], self["proxy-host"], self["proxy-port"], self.environ
        )
        logging = parse.logSettings(self["log-level"], self["log-format"], self["access-log"])
        timeouts = Timeouts(
            connect=parse.flag("connect-timeout", self["connect-timeout"], parse.positiveSeconds),
            response=parse.flag(
                "upstream-timeout", self["upstream-timeout"], parse.positiveSeconds
            ),
        )
        return Config(
            auth=parseauth.authSettings(self),
            routes=routes,
            replicas=parseroutes.replicaSettings(
                self["discovery-interval"],
                self["replica-drain-timeout"],
                self["affinity-cookie"],
                self["affinity-secret-file"],
                self["resolver"],
            ),
            listen=listen,
            timeouts=timeouts,
            maxBodySize=parse.flag("max-body-size", self["max-body-size"], parse.sizeLimit),
            maxHeaderSize=parse.flag("max-header-size", self["max-header-size"], parse.headerSize),
            clients=parse.clientLimits(
                self["header-timeout"],
                self["idle-timeout"],
                self["min-body-rate"],
                self["max-connections"],
            ),
            trusted=parse.trustedProxies(self["trust-forwarded"]),
            websocket=parse.webSocketSettings(
                self["ws-ping-interval"],
                self["ws-ping-timeout"],
                self["ws-compression"],
                self["ws-max-message-size"],
                self["ws-max-browser-message-size"],
            ),
            operations=parse.operations(
                self["shutdown-timeout"],
                self["admin"],
                self["health-interval"],
                self["health-path"],
            ),
            logging=logging,
            tls=tlsSettings(self._tlsFlags(), listen, upstream),
        )

    def _tlsFlags(self) -> TLSFlags:
        return TLSFlags(
            cert=self["tls-cert"],
            key=self["tls-key"],
            ca=self["tls-ca"],
            clientCA=self["tls-client-ca"],
            minVersion=str(self["tls-min-version"] or "1.2"),
            reloadInterval=str(self["tls-reload-interval"]),
            redirectHTTP=self["redirect-http"],
            redirectPort=self["redirect-port"],
            acmeWebroot=self["acme-webroot"],
            hsts=self["hsts"],
            upstreamCA=self["upstream-ca"],
            upstreamInsecure=bool(self["upstream-insecure"]),
        )


def makeService(options: Options, reactor: ProxyReactor | None = None) -> IService:
    """
    Build the whole proxy as a service, ready to start under any Twisted
    application (L{stproxy.assembly.assemble}).

    Options that exit on error come from a command line (twistd, C{python -m},
    a .tac): that process is stproxy's, so the service owns its signals and
    exit status.  L{stproxy.api.StreamlitProxy}'s options do not.

    @param reactor: the reactor to run on; the global one when C{None}.
    """
    if reactor is None:
        reactor = globalReactor()
    if options.processes.supervises:  # --workers N: this process starts and watches N workers
        config, arguments = options.config, options.arguments
        return supervise(config, options.processes, arguments, reactor, options.exitOnError)
    return assemble(options.config, reactor, options.exitOnError, worker=options.processes.worker)


__all__ = ["Options", "makeService"]
