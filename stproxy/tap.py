"""
Command-line options and the one function that assembles a proxy from them.

The twistd plugin, C{python -m stproxy} and L{stproxy.api.StreamlitProxy} all
parse an L{Options} and hand it to L{makeService}; nothing else builds a proxy.
"""

from __future__ import annotations

import math
import os
import re
import sys
from typing import Any, Mapping, NoReturn

from twisted.application.service import IService
from twisted.logger import LogLevel
from twisted.python import usage

from stproxy.endpoints import checkPlainDescription, isSSLDescription
from stproxy.headers import TrustedProxies
from stproxy.tls import TLSEdge
from stproxy.upstream import Timeouts, UpstreamAddress
from stproxy.websocket import WebSocketSettings

DEFAULT_UPSTREAM_HOST = "localhost"
DEFAULT_UPSTREAM_PORT = 8501
DEFAULT_LISTEN_PORT = 8500
DEFAULT_LISTEN_HOST = "0.0.0.0"
#: Streamlit's own server.maxUploadSize (200 MiB) plus room for multipart framing.
DEFAULT_MAX_BODY_SIZE = 201 * 1024 * 1024

LOG_LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
}

_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}

#: A path stproxy can put on a request line as it is.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")

#: ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
_DIGITS = re.compile(r"[0-9]+")


def _positiveSeconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number of seconds")
    return value


def _nonNegativeSeconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be 0 (off) or a positive number of seconds")
    return value


def parseSize(text: str) -> int:
    """Parse a byte count such as C{1048576}, C{512K}, C{200M} or C{1G}."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = text[-1:] if text[-1:] in _SIZE_SUFFIXES else ""
    number = text[: len(text) - len(suffix)]
    if not _DIGITS.fullmatch(number):
        raise ValueError(f"{text!r} is not a size (use e.g. 1048576, 512K, 200M)")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _port(text: str, flag: str, allowZero: bool = False) -> int:
    low = 0 if allowZero else 1
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= 65535:
        raise usage.UsageError(f"{flag} {text}: must be a port number {low}-65535")
    return int(text)


def _escapeEndpoint(text: str) -> str:
    """Escape C{:} and C{\\} so a host (an IPv6 literal, say) fits in an endpoint string."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


class Options(usage.Options):
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
        [
            "upstream",
            "u",
            None,
            "Streamlit server: HOST:PORT, http://HOST:PORT or https://HOST:PORT "
            f"[default: {DEFAULT_UPSTREAM_HOST}:{DEFAULT_UPSTREAM_PORT}, or "
            "$STREAMLIT_HOST/$STREAMLIT_PORT]",
        ],
        ["log-level", None, "INFO", "DEBUG, INFO, WARNING or ERROR"],
        ["access-log", None, None, "Write a combined-format access log to PATH ('-' = stdout)"],
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
            "Largest request body accepted (then 413); K/M/G suffixes allowed",
        ],
        ["ws-ping-interval", None, "30", "Seconds between WebSocket pings to the browser; 0 = off"],
        ["ws-ping-timeout", None, "30", "Seconds to wait for a pong before dropping the browser"],
        ["ws-compression", None, "on", "permessage-deflate towards the browser: on or off"],
        [
            "ws-max-message-size",
            None,
            "200M",
            "Largest WebSocket message relayed (Streamlit's server.maxMessageSize)",
        ],
        ["streamlit-host", None, None, "Seed-compatible: upstream host [$STREAMLIT_HOST]"],
        ["streamlit-port", None, None, "Seed-compatible: upstream port [$STREAMLIT_PORT]"],
        ["proxy-host", None, None, "Seed-compatible: address to listen on [$PROXY_HOST]"],
        ["proxy-port", None, None, "Seed-compatible: port to listen on [$PROXY_PORT]"],
        # Operations (stproxy.admin, stproxy.drain, stproxy.health): see the README, "Operations".
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
        # TLS edge (stproxy.tls): defaults for ssl: listeners, redirect, HSTS, upstream TLS.
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

    def parseOptions(self, options: Any = None) -> None:
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
        self["upstream"] = self._upstream()
        self["listen"] = self._listen()
        level = str(self["log-level"]).upper()
        if level not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level {self['log-level']}: choose from {', '.join(LOG_LEVELS)}"
            )
        self["log-level"] = LOG_LEVELS[level]
        self["timeouts"] = Timeouts(
            connect=self._number("connect-timeout", _positiveSeconds),
            response=self._number("upstream-timeout", _positiveSeconds),
        )
        self["max-body-size"] = self._number("max-body-size", parseSize)
        self._checkAccessLog()
        try:
            self["trust-forwarded"] = TrustedProxies(self["trust-forwarded"])
        except ValueError as e:
            raise usage.UsageError(f"--trust-forwarded: {e}") from None
        self["websocket"] = self._webSocketSettings()
        self._operations()
        self["tls"] = self._tlsEdge()

    def _number(self, name: str, parse: Any) -> Any:
        try:
            return parse(str(self[name]))
        except ValueError as e:
            raise usage.UsageError(f"--{name} {self[name]}: {e}") from None

    def _upstream(self) -> UpstreamAddress:
        host, port = self["streamlit-host"], self["streamlit-port"]
        if self["upstream"] is not None:
            if host is not None or port is not None:
                raise usage.UsageError(
                    "give either --upstream or --streamlit-host/--streamlit-port, not both"
                )
            text = self["upstream"]
        else:
            host = host or self.environ.get("STREAMLIT_HOST") or DEFAULT_UPSTREAM_HOST
            port = port or self.environ.get("STREAMLIT_PORT") or str(DEFAULT_UPSTREAM_PORT)
            _port(port, "--streamlit-port")
            text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            return UpstreamAddress.parse(text)
        except ValueError as e:
            raise usage.UsageError(f"--upstream: {e}") from None

    def _listen(self) -> list[str]:
        host, port = self["proxy-host"], self["proxy-port"]
        descriptions = list(self["listen"])
        if descriptions and (host is not None or port is not None):
            raise usage.UsageError("give either --listen or --proxy-host/--proxy-port, not both")
        if not descriptions:
            host = host or self.environ.get("PROXY_HOST")
            port = port or self.environ.get("PROXY_PORT")
            if host is None and port is None:
                descriptions = [f"tcp:{DEFAULT_LISTEN_PORT}"]
            else:
                port = _port(port or str(DEFAULT_LISTEN_PORT), "--proxy-port", allowZero=True)
                interface = _escapeEndpoint(host or DEFAULT_LISTEN_HOST)
                descriptions = [f"tcp:{port}:interface={interface}"]
        for description in descriptions:
            if isSSLDescription(description):
                continue  # stproxy's own TLS listener: checked by _tlsEdge
            try:
                checkPlainDescription(description)
            except ValueError as e:
                raise usage.UsageError(f"--listen {description}: {e}") from None
        return descriptions

    def _checkAccessLog(self) -> None:
        """An access log that cannot be written must stop start-up now, in one line."""
        path = self["access-log"]
        if path is None or path == "-":
            return
        target = path if os.path.exists(path) else os.path.dirname(os.path.abspath(path))
        if not os.access(target, os.W_OK):
            problem = "not writable" if os.path.exists(target) else "no such directory"
            raise usage.UsageError(f"--access-log {path}: {problem}")

    def _tlsEdge(self) -> TLSEdge:
        """TLS listeners, their certificates (loaded and checked now) and the TLS flags."""
        try:
            return TLSEdge.fromOptions(self)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _operations(self) -> None:
        """Check the shutdown, admin, health and log format options."""
        self["shutdown-timeout"] = self._number("shutdown-timeout", _nonNegativeSeconds)
        self["health-interval"] = self._number("health-interval", _positiveSeconds)
        path = str(self["health-path"])
        if not path.startswith("/") or not _VISIBLE_ASCII.fullmatch(path):
            raise usage.UsageError(f"--health-path {path}: must be a path such as /_stcore/health")
        self["health-path"] = path.encode("ascii")
        logFormat = str(self["log-format"]).lower()
        if logFormat not in ("text", "json"):
            raise usage.UsageError(f"--log-format {self['log-format']}: choose text or json")
        self["log-format"] = logFormat
        if self["admin"] is not None:
            try:
                checkPlainDescription(self["admin"])
            except ValueError as e:
                raise usage.UsageError(f"--admin {self['admin']}: {e}") from None

    def _webSocketSettings(self) -> WebSocketSettings:
        compression = str(self["ws-compression"]).lower()
        if compression not in ("on", "off"):
            raise usage.UsageError(f"--ws-compression {compression}: choose on or off")
        return WebSocketSettings(
            pingInterval=self._number("ws-ping-interval", _nonNegativeSeconds),
            pingTimeout=self._number("ws-ping-timeout", _positiveSeconds),
            compression=compression == "on",
            maxMessageSize=self._number("ws-max-message-size", parseSize),
        )


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the whole proxy as a service: one listener per C{--listen}, the
    upstream connection pool, logging, ready to start under any Twisted
    application.

    @param reactor: the reactor to run on; the global one when C{None}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    from stproxy.service import ProxyService

    service = ProxyService.fromOptions(options, reactor)
    # Options that exit on error come from a command line (twistd, python -m,
    # a .tac): that process is stproxy's.  StreamlitProxy's options do not.
    service.ownsProcess = options.exitOnError
    return service
