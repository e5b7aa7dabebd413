"""
stproxy: a reverse proxy and TLS edge for Streamlit, built on Twisted.

How a request flows::

    browser --HTTP/WS--> listening endpoints (tcp:, ssl:, unix:)      service.py, endpoints.py
                            |                                         (ssl: via tls.py, certificates.py)
                            v
                  twisted.web Site (ProxySite) -- ProxyRoot            site.py
                     |-- Upgrade: websocket --> Autobahn relay         websocket.py, relay.py
                     |        browser leg <--relay--> upstream leg --> Streamlit /_stcore/stream
                     |                        (handshake text: handshake.py)
                     `-- anything else -------> ReverseProxyResource   http.py
                              --Agent on a persistent pool-->          upstream.py (upstreamtls.py)
                              Streamlit

Around it:

- C{headers.py}: which headers cross, and how C{X-Forwarded-*} are set;
- C{tap.py}: the options, and C{makeService}, the one place a proxy is assembled;
- C{drain.py}, C{health.py}, C{metrics.py}, C{admin.py}: graceful shutdown,
  upstream health, Prometheus metrics and the admin listener;
- C{reload.py}, C{redirect.py}: certificate reload, HTTP-to-HTTPS redirects;
- C{logs.py}: log level, JSON lines and redaction;
- C{api.py}: L{StreamlitProxy} for asyncio programs; C{__main__.py}: C{python -m stproxy}.
"""

from stproxy.api import StreamlitProxy
from stproxy.tap import Options, makeService

__all__ = ["StreamlitProxy", "Options", "makeService"]
