"""
Running stproxy in production.

C{drain} (which connections and requests are open, for graceful shutdown),
C{collector} (Python's garbage collector, set for a server),
C{metrics} (Prometheus), C{admin} (the admin listener), C{logs} (level, JSON lines, redaction) and C{signals}
(a second SIGTERM ends a drain).
"""
