"""The twistd dropin for stproxy: data only, so ``twistd --help`` never imports stproxy."""

from twisted.application.service import ServiceMaker

stproxy = ServiceMaker(
    "stproxy",
    "stproxy.tap",
    "Reverse proxy and TLS edge for Streamlit (HTTP and WebSocket)",
    "stproxy",
)
