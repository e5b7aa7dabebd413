"""
stproxy: a reverse proxy and TLS edge for Streamlit, built on Twisted.

How a request flows::

    browser --HTTP/WS--> listening endpoints (tcp:, ssl:, unix:)     service.py
                            |
                            v
                  twisted.web Site (ProxySite) -- ProxyRoot            site.py
                     |-- Upgrade: websocket --> Autobahn relay         websocket.py
                     |        browser leg <--relay--> upstream leg --> Streamlit /_stcore/stream
                     `-- anything else -------> ReverseProxyResource   http.py
                              --Agent on a persistent pool-->          upstream.py
                              Streamlit

Which headers cross, and how C{X-Forwarded-*} are set, is decided in
C{headers.py}; options and the assembly of all of the above in C{tap.py}.
"""

from stproxy.api import StreamlitProxy
from stproxy.tap import Options, makeService

__all__ = ["StreamlitProxy", "Options", "makeService"]
