"""
What the browser leg's Autobahn factory is told (C{setProtocolOptions}),
from the proxy's L{WebSocketSettings}.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.compress import (
    PerMessageCompressOffer,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)

from stproxy.config import WebSocketSettings


def acceptDeflate(offers: list[PerMessageCompressOffer]) -> PerMessageDeflateOfferAccept | None:
    """Accept the browser's first permessage-deflate offer as it stands."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def refuseCompression(offers: list[PerMessageCompressOffer]) -> None:
    """Accept no compression offer (C{--ws-compression off})."""
    return None


def browserLegOptions(settings: WebSocketSettings) -> dict[str, Any]:
    """The browser leg's protocol options."""
    return dict(
        webStatus=False,
        # Also what a compressed message is inflated to, at most (a
        # deflate bomb is refused with 1009 at the limit).
        maxMessagePayloadSize=settings.browserMessageLimit,
        failByDrop=False,
        echoCloseCodeReason=True,
        openHandshakeTimeout=settings.handshakeTimeout + 1.0,
        autoPingInterval=settings.pingInterval,
        autoPingTimeout=settings.pingTimeout if settings.pingInterval else 0,
        perMessageCompressionAccept=acceptDeflate if settings.compression else refuseCompression,
        # Streamlit decides about Origins, "null" included.
        allowNullOrigin=True,
        # The upstream leg speaks 13 (RFC 6455); Autobahn would also accept
        # the draft version 8.  RelayResource answers 426 first.
        versions=[13],
    )


__all__ = ["acceptDeflate", "browserLegOptions", "refuseCompression"]
