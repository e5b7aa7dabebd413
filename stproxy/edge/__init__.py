"""
The edge: where browsers connect.

Listening endpoints and their announcement (C{listeners}), stproxy's own
C{ssl:} descriptions (C{endpoints}), the certificates they serve
(C{certificates}) and their reload (C{reload}), the HTTP-to-HTTPS redirect
listener (C{redirect}), who a client certificate names (C{clientcert}), the
cap on open client connections (C{connections}) and how many the file
descriptor limit holds (C{descriptors}).
"""
