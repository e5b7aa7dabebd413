"""
Embedding stproxy in a Twisted application: run with ``twistd -ny deploy/stproxy.tac``.

The proxy is an ordinary service; give it a parent beside your own services
and the application starts and stops it with them.
"""

from twisted.application.service import Application

from stproxy import Options, makeService

options = Options()
options.parseOptions(["--upstream", "localhost:8501", "--listen", "tcp:8500"])

application = Application("stproxy")
makeService(options).setServiceParent(application)
