"""
From command-line text to the typed values of a L{stproxy.config.Config}.

Each parser takes the text of one flag (or of the few flags that only mean
something together) and returns a value, or raises L{ConfigError} with the
one line C{stproxy: error: ...} prints: the flag, what was given, what would
do.  Files named by flags (certificates, the access log's directory) are
checked here, once, so a bad one stops start-up before anything listens.
"""

from __future__ import annotations

import math
import os
import re
from typing import Callable, Mapping, TypeVar

from twisted.logger import LogLevel

from stproxy.config import (
    ACCESS_LOG_OFF,
    MIN_MAX_HEADER_SIZE,
    ClientLimits,
    ConfigError,
    LogSettings,
    OperationsSettings,
    WebSocketSettings,
)
from stproxy.edge.endpoints import checkPlainDescription, isSSLDescription
from stproxy.http.headers import TrustedProxies
from stproxy.upstream.address import UpstreamAddress

DEFAULT_UPSTREAM_HOST = "localhost"
DEFAULT_UPSTREAM_PORT = 8501
DEFAULT_LISTEN_PORT = 8500
DEFAULT_LISTEN_HOST = "0.0.0.0"

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

T = TypeVar("T")


def positiveSeconds(text: str) -> float:
    """A number of seconds greater than 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number of seconds")
    return value


def nonNegativeSeconds(text: str) -> float:
    """A number of seconds, 0 meaning off."""
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


#: What a size limit flag takes for "no limit".
UNLIMITED = "unlimited"


def sizeLimit(text: str) -> int:
    """
    A size limit (C{--max-body-size}, C{--ws-max-message-size},
    C{--ws-max-browser-message-size}): a size, or
    C{unlimited}, returned as 0, which is what L{stproxy.config.Config} and
    Autobahn take for "none".  A written 0 is refused: it reads as "nothing
    allowed" and used to lift the limit without a word.
    """
    if text.strip().lower() == UNLIMITED:
        return 0
    try:
        size = parseSize(text)
    except ValueError:
        raise ValueError(f"not a size (use e.g. 1048576, 512K, 200M, or {UNLIMITED})") from None
    if size == 0:
        raise ValueError(f"a limit of 0 is refused; write {UNLIMITED} for no limit")
    return size


def headerSize(text: str) -> int:
    """
    C{--max-header-size}: a size of at least 1K, never unlimited (a request
    head is held in memory whole until it ends).
    """
    try:
        size = parseSize(text)
    except ValueError:
        raise ValueError("not a size (use e.g. 65536, 64K, 1M)") from None
    if size < MIN_MAX_HEADER_SIZE:
        raise ValueError(f"must be at least {MIN_MAX_HEADER_SIZE // 1024}K")
    return size


def flag(name: str, text: object, parse: Callable[[str], T]) -> T:
    """C{parse(text)}, its C{ValueError} turned into a one-line error naming C{--name}."""
    try:
        return parse(str(text))
    except ValueError as e:
        raise ConfigError(f"--{name} {text}: {e}") from None


def port(text: str, name: str, allowZero: bool = False) -> int:
    """A TCP port number, 1-65535 (or 0, "any", when C{allowZero})."""
    low = 0 if allowZero else 1
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= 65535:
        raise ConfigError(f"{name} {text}: must be a port number {low}-65535")
    return int(text)


def _escapeEndpoint(text: str) -> str:
    """Escape C{:} and C{\\} so a host (an IPv6 literal, say) fits in an endpoint string."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


def upstream(
    text: str | None, host: str | None, portText: str | None, environ: Mapping[str, str]
) -> UpstreamAddress:
    """
    C{--upstream}, or the seed's C{--streamlit-host}/C{--streamlit-port}
    (then C{$STREAMLIT_HOST}/C{$STREAMLIT_PORT}, then localhost:8501).
    """
    if text is not None:
        if host is not None or portText is not None:
            raise ConfigError(
                "give either --upstream or --streamlit-host/--streamlit-port, not both"
            )
    else:
        host = host or environ.get("STREAMLIT_HOST") or DEFAULT_UPSTREAM_HOST
        portText = portText or environ.get("STREAMLIT_PORT") or str(DEFAULT_UPSTREAM_PORT)
        port(portText, "--streamlit-port")
        text = f"[{host}]:{portText}" if ":" in host else f"{host}:{portText}"
    try:
        return UpstreamAddress.parse(text)
    except ValueError as e:
        raise ConfigError(f"--upstream: {e}") from None


def listeners(
    descriptions: list[str], host: str | None, portText: str | None, environ: Mapping[str, str]
) -> tuple[str, ...]:
    """
    The C{--listen} descriptions, or one built from the seed's
    C{--proxy-host}/C{--proxy-port} (then C{$PROXY_HOST}/C{$PROXY_PORT},
    then C{tcp:8500}).  C{ssl:} ones are checked with their certificates
    (L{stproxy.parsetls}).
    """
    if descriptions and (host is not None or portText is not None):
        raise ConfigError("give either --listen or --proxy-host/--proxy-port, not both")
    if not descriptions:
        host = host or environ.get("PROXY_HOST")
        portText = portText or environ.get("PROXY_PORT")
        if host is None and portText is None:
            descriptions = [f"tcp:{DEFAULT_LISTEN_PORT}"]
        else:
            number = port(portText or str(DEFAULT_LISTEN_PORT), "--proxy-port", allowZero=True)
            interface = _escapeEndpoint(host or DEFAULT_LISTEN_HOST)
            descriptions = [f"tcp:{number}:interface={interface}"]
    for description in descriptions:
        if not isSSLDescription(description):
            plainListener("--listen", description)
    return tuple(descriptions)


def plainListener(name: str, description: str) -> str:
    """A listen description Twisted builds (C{tcp:}, C{unix:}...), checked without listening."""
    try:
        checkPlainDescription(description)
    except ValueError as e:
        raise ConfigError(f"{name} {description}: {e}") from None
    return description


def trustedProxies(networks: list[str]) -> TrustedProxies:
    """C{--trust-forwarded}: addresses or CIDR networks."""
    try:
        return TrustedProxies(networks)
    except ValueError as e:
        raise ConfigError(f"--trust-forwarded: {e}") from None


def logSettings(level: str, format: str, accessLog: str | None) -> LogSettings:
    """C{--log-level}, C{--log-format} and C{--access-log} (a writable file, C{-} or C{off})."""
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"--log-level {level}: choose from {', '.join(LOG_LEVELS)}")
    if format.lower() not in ("text", "json"):
        raise ConfigError(f"--log-format {format}: choose text or json")
    if accessLog is not None and accessLog not in ("-", ACCESS_LOG_OFF):
        target = (
            accessLog if os.path.exists(accessLog) else os.path.dirname(os.path.abspath(accessLog))
        )
        if not os.access(target, os.W_OK):
            problem = "not writable" if os.path.exists(target) else "no such directory"
            raise ConfigError(f"--access-log {accessLog}: {problem}")
    return LogSettings(LOG_LEVELS[level.upper()], format.lower(), accessLog)


def operations(
    shutdownTimeout: str, admin: str | None, healthInterval: str, healthPath: str
) -> OperationsSettings:
    """C{--shutdown-timeout}, C{--admin}, C{--health-interval} and C{--health-path}."""
    if not healthPath.startswith("/") or not _VISIBLE_ASCII.fullmatch(healthPath):
        raise ConfigError(f"--health-path {healthPath}: must be a path such as /_stcore/health")
    return OperationsSettings(
        shutdownTimeout=flag("shutdown-timeout", shutdownTimeout, nonNegativeSeconds),
        admin=None if admin is None else plainListener("--admin", admin),
        healthInterval=flag("health-interval", healthInterval, positiveSeconds),
        healthPath=healthPath.encode("ascii"),
    )


def connectionCount(text: str) -> int:
    """
    C{--max-connections}: a whole number, at least 1.  Whether the descriptor
    limit holds it is for the process that serves (L{stproxy.edge.descriptors}).
    """
    if not _DIGITS.fullmatch(text.strip()) or int(text) < 1:
        raise ValueError("must be a whole number of connections, at least 1")
    return int(text)


def rate(text: str) -> int:
    """C{--min-body-rate}: bytes per second, as a size (C{1K}), 0 allowed."""
    text = text.strip()
    try:
        return parseSize(text[:-2] if text.lower().endswith("/s") else text)
    except ValueError:
        raise ValueError("not a rate in bytes per second (use e.g. 1024, 1K, 0)") from None


def clientLimits(
    headerTimeout: str, idleTimeout: str, minBodyRate: str, maxConnections: str | None
) -> ClientLimits:
    """C{--header-timeout}, C{--idle-timeout}, C{--min-body-rate} and C{--max-connections}."""
    return ClientLimits(
        headerTimeout=flag("header-timeout", headerTimeout, positiveSeconds),
        idleTimeout=flag("idle-timeout", idleTimeout, positiveSeconds),
        minBodyRate=flag("min-body-rate", minBodyRate, rate),
        maxConnections=None
        if maxConnections is None
        else flag("max-connections", maxConnections, connectionCount),
    )


def webSocketSettings(
    pingInterval: str,
    pingTimeout: str,
    compression: str,
    maxMessageSize: str,
    maxBrowserMessageSize: str,
) -> WebSocketSettings:
    """The C{--ws-*} flags."""
    if compression.lower() not in ("on", "off"):
        raise ConfigError(f"--ws-compression {compression.lower()}: choose on or off")
    return WebSocketSettings(
        pingInterval=flag("ws-ping-interval", pingInterval, nonNegativeSeconds),
        pingTimeout=flag("ws-ping-timeout", pingTimeout, positiveSeconds),
        compression=compression.lower() == "on",
        maxMessageSize=flag("ws-max-message-size", maxMessageSize, sizeLimit),
        maxBrowserMessageSize=flag("ws-max-browser-message-size", maxBrowserMessageSize, sizeLimit),
    )


__all__ = [
    "clientLimits",
    "connectionCount",
    "flag",
    "headerSize",
    "listeners",
    "logSettings",
    "nonNegativeSeconds",
    "operations",
    "parseSize",
    "sizeLimit",
    "port",
    "positiveSeconds",
    "trustedProxies",
    "upstream",
    "webSocketSettings",
]
