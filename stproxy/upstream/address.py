"""
The address of the Streamlit server stproxy forwards to, and the URLs each
leg asks it for.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UpstreamAddress:
    """
    The scheme, host and port of the one server stproxy forwards to.

    @ivar scheme: C{"http"} or C{"https"}.
    @ivar host: a host name or IP address (IPv6 without brackets).
    @ivar port: the TCP port.
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> UpstreamAddress:
        """
        Parse C{host:port}, C{http://host:port} or C{https://host:port}.

        @raise ValueError: with a message fit for a usage error.
        """
        if "://" not in text:
            text = "http://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"invalid upstream {text!r}: {e}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"invalid upstream {text!r}: scheme must be http or https, not {parts.scheme!r}"
            )
        if not parts.hostname:
            raise ValueError(f"invalid upstream {text!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"invalid upstream {text!r}: give only scheme, host and port"
                " (paths are forwarded as the browser sends them)"
            )
        if port == 0:
            raise ValueError(f"invalid upstream {text!r}: port must be 1-65535")
        return cls(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])

    @property
    def isTLS(self) -> bool:
        return self.scheme == "https"

    @property
    def netloc(self) -> str:
        """C{host:port}, with IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def httpURL(self, target: bytes) -> bytes:
        """The absolute URL of an origin-form request target on the upstream."""
        return f"{self.scheme}://{self.netloc}".encode("ascii") + target

    def webSocketURL(self, target: str) -> str:
        """The C{ws://} or C{wss://} URL of an origin-form target on the upstream."""
        scheme = "wss" if self.isTLS else "ws"
        return f"{scheme}://{self.netloc}{target}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"


__all__ = ["UpstreamAddress", "DEFAULT_PORTS"]
