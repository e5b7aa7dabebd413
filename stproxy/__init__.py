"""
stproxy: a reverse proxy and TLS edge for Streamlit, built on Twisted.

How a request flows::

    browser --HTTP/WS--> listeners (tcp:, ssl:, unix:)               edge/listeners, edge/endpoints
                            |                                        (ssl: certificates: edge/certificates)
                            |  counted: --max-connections, 503 past  edge/connections, edge/descriptors
                            v
                  twisted.web Site (ProxySite) -- ProxyRoot           http/site, http/channel, http/request,
                     |                                                 http/root, http/linger, http/timeouts
                     |-- Upgrade: websocket --> Autobahn relay        websocket/resource
                     |        browser leg <--relay--> upstream leg    websocket/browser, websocket/upstream,
                     |                                    |           websocket/relay, websocket/sessions
                     |                                    `--> Streamlit /_stcore/stream
                     `-- anything else -------> ReverseProxyResource  http/forward, http/exchange
                              --Agent on a persistent pool-->         upstream/client (upstream/tls,
                                to an address looked up on a timer    upstream/resolution)
                              Streamlit

How a proxy comes to be::

    command line --Options--> Config ---------assemble---------> ProxyService tree
                   tap.py     config.py       assembly.py         service.py
                   (parsers: parse.py, parsetls.py)
                      |
                      `-- --workers N --> SupervisorService, N x python -m stproxy
                                          workers/assembly (each worker: assemble)

The top level:

- C{config}: the frozen, typed configuration, and C{ConfigError};
- C{parse}, C{parsetls}, C{parseroutes}, C{parseauth}: command-line text
  into configuration (general, TLS, routing, authentication), with the
  one-line error messages;
- C{tap}: the options and C{makeService} (the twistd plugin);
- C{assembly}: C{assemble(config, reactor)}, the only place parts are wired
  (with C{assembleapps}: the routes, replicas and authentication);
- C{service}: the root service and its graceful stop;
- C{reactor}: the type of the reactor a proxy runs on, for annotations;
- C{buffers}: how much each connection reads at once and holds for a slow
  reader, on both legs;
- C{api}: L{StreamlitProxy} for asyncio programs; C{__main__}: C{python -m stproxy};
- C{testing}: fakes for tests and embedding programs;
- C{_twisted}, C{_autobahn}: every private API of Twisted and of Autobahn
  stproxy relies on, each behind one adapter, pinned by tests.

The packages, each with a docstring of its own:

- C{edge}: listeners, C{ssl:} descriptions, certificates and their reload,
  the HTTPS redirect, client certificates, the connection cap;
- C{http}: the site, the request policy, slow-client timeouts, routing,
  forwarding, the streamed exchange, headers, per-request accounting;
- C{websocket}: the WebSocket relay through Autobahn;
- C{upstream}: where requests go (today one address) and the client that
  reaches it;
- C{routing}: apps by prefix, their replicas, affinity, health checks,
  discovery;
- C{auth}: who a request is from: password files, forward auth, client
  certificates, and the identity headers Streamlit reads as C{st.user};
- C{ops}: drain, metrics, admin, logs, signals;
- C{workers}: C{--workers N}, several processes on the same listeners: the
  supervisor that binds them, starts, restarts and stops the workers, and
  serves their merged metrics; each worker a whole stproxy adopting them.
"""

from stproxy.api import StreamlitProxy
from stproxy.tap import Options, makeService

__all__ = ["StreamlitProxy", "Options", "makeService"]
