"""
The HTTP side: one twisted.web L{Site} for every listener.

C{site} (connections, accounting), C{channel} (the head limits, and the
proxy's own answers when a request cannot be read), C{addresses} (what a
connection is, asked once), C{timeouts} (how long
a client may take over a head, a body, or between requests), C{linger} (closing
without a reset after such an answer), C{request} (the body cap and HSTS),
C{root} (upgrade or not), C{refusal} (what is never forwarded, and how it
is answered on either leg), C{forward} (how the rest is forwarded),
C{exchange} (one request and its streamed response), C{headers} (which
headers cross, pure functions) and C{accesslog} (what is counted and logged
per request).
"""
