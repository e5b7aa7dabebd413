"""
Running stproxy in production.

C{drain} (which connections and requests are open, for graceful shutdown),
C{metrics} (Prometheus), C{admin} (the admin listener), C{logs} (level, JSON lines, redaction) and C{signals}
(a second SIGTERM ends a drain).
"""
